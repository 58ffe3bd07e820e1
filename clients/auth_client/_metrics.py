"""Counters of one client, readable in code (`AuthClient.stats()`) and exported
through prometheus-client when it is installed.

The hot path only increments plain integer attributes. Prometheus reads them at
scrape time through ONE collector per process, registered on first use, which
sums the counters of every live client by its `name` label — so several
clients in one process never register duplicate metric names.
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from collections.abc import Iterator


class Counters:
    """Mutable counters, incremented in place by the client."""

    __slots__ = (
        "cache_hits",
        "cache_misses",
        "coalesced",
        "fallback_open",
        "fallback_stale",
        "ids_sent",
        "replica_hits",
        "rpcs",
        "shadow_disagreements",
        "shadow_failures",
        "unavailable",
        "unchecked",
    )

    def __init__(self) -> None:
        self.cache_hits = 0
        self.cache_misses = 0
        self.coalesced = 0
        self.fallback_open = 0
        self.fallback_stale = 0
        self.ids_sent = 0
        self.replica_hits = 0
        self.rpcs = 0
        self.shadow_disagreements = 0
        self.shadow_failures = 0
        self.unavailable = 0
        self.unchecked = 0

    def snapshot(self, cache_size: int, breaker_state: str, breaker_opened: int) -> ClientStats:
        return ClientStats(
            cache_hits=self.cache_hits,
            cache_misses=self.cache_misses,
            cache_size=cache_size,
            rpcs=self.rpcs,
            ids_sent=self.ids_sent,
            coalesced=self.coalesced,
            breaker_state=breaker_state,
            breaker_opened=breaker_opened,
            unavailable=self.unavailable,
            fallback_stale=self.fallback_stale,
            fallback_open=self.fallback_open,
            shadow_disagreements=self.shadow_disagreements,
            shadow_failures=self.shadow_failures,
            unchecked=self.unchecked,
            replica_hits=self.replica_hits,
        )


@dataclass(frozen=True, slots=True)
class ClientStats:
    """A snapshot of one client's counters (all counts since the client started)."""

    cache_hits: int
    """Lookups answered from a fresh cache entry, without I/O."""
    cache_misses: int
    """Lookups that needed auth-service."""
    cache_size: int
    rpcs: int
    """RPCs sent (UserExists, BatchUserExists, GetUser), retries not included."""
    ids_sent: int
    """Ids asked for in those RPCs."""
    coalesced: int
    """Lookups that joined another caller's pending or in-flight lookup of the same id."""
    breaker_state: str
    """"closed", "open" or "half-open"."""
    breaker_opened: int
    """Times the breaker opened."""
    unavailable: int
    """ServiceUnavailableError (incl. CircuitOpenError, DeadlineExceededError) raised."""
    fallback_stale: int
    """Answers served from an expired entry (SERVE_STALE)."""
    fallback_open: int
    """Ids answered "exists" without verification (FAIL_OPEN)."""
    shadow_disagreements: int
    """SHADOW mode: ids auth-service said do not exist (the caller was told they do)."""
    shadow_failures: int
    """SHADOW mode: checks that failed (the caller was told "exists")."""
    unchecked: int
    """OFF mode: ids answered "exists" without any check."""
    replica_hits: int = 0
    """Lookups answered by the local replica (ReplicaConfig), without I/O."""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class StatsSource(Protocol):
    @property
    def name(self) -> str: ...

    def stats(self) -> ClientStats: ...


_METRICS: tuple[tuple[str, str, str], ...] = (
    # (ClientStats field, metric name, help); counters get "_total" appended.
    ("cache_hits", "auth_client_cache_hits", "Lookups answered from the cache"),
    ("cache_misses", "auth_client_cache_misses", "Lookups that needed auth-service"),
    ("rpcs", "auth_client_rpcs", "RPCs sent to auth-service"),
    ("ids_sent", "auth_client_ids_sent", "User ids asked for in RPCs"),
    ("coalesced", "auth_client_coalesced", "Lookups that shared another caller's call"),
    ("breaker_opened", "auth_client_breaker_opened", "Times the circuit breaker opened"),
    ("unavailable", "auth_client_unavailable", "ServiceUnavailableError raised to callers"),
    ("fallback_stale", "auth_client_fallback_stale", "Answers served stale (SERVE_STALE)"),
    ("fallback_open", "auth_client_fallback_open", "Ids answered unverified (FAIL_OPEN)"),
    ("shadow_disagreements", "auth_client_shadow_disagreements", "SHADOW: ids found missing"),
    ("shadow_failures", "auth_client_shadow_failures", "SHADOW: checks that failed"),
    ("unchecked", "auth_client_unchecked", "OFF: ids answered without a check"),
)
_BREAKER_STATES = ("closed", "half-open", "open")

_sources: weakref.WeakSet[StatsSource] = weakref.WeakSet()
_lock = threading.Lock()
_registered = False


def _families(snapshots: list[tuple[str, ClientStats]]) -> Iterator[Any]:
    from prometheus_client.core import (  # noqa: PLC0415
        CounterMetricFamily,
        GaugeMetricFamily,
    )

    for field, metric, help_text in _METRICS:
        family = CounterMetricFamily(metric, help_text, labels=["client"])
        totals: dict[str, int] = {}
        for name, stats in snapshots:
            totals[name] = totals.get(name, 0) + getattr(stats, field)
        for name, value in sorted(totals.items()):
            family.add_metric([name], value)
        yield family
    size = GaugeMetricFamily("auth_client_cache_entries", "Entries in the cache", labels=["client"])
    state = GaugeMetricFamily(
        "auth_client_breaker_state",
        "1 for the breaker's current state (several clients of one name add up)",
        labels=["client", "state"],
    )
    sizes: dict[str, int] = {}
    states: dict[tuple[str, str], int] = {}
    for name, stats in snapshots:
        sizes[name] = sizes.get(name, 0) + stats.cache_size
        for candidate in _BREAKER_STATES:
            key = (name, candidate)
            states[key] = states.get(key, 0) + (stats.breaker_state == candidate)
    for name, value in sorted(sizes.items()):
        size.add_metric([name], value)
    for (name, candidate), value in sorted(states.items()):
        state.add_metric([name, candidate], value)
    yield size
    yield state


class _Collector:
    def collect(self) -> Iterator[Any]:
        # Scrapes run in the exporter's thread: copy the live set under the lock
        # that guards its changes. Counters are plain ints, read without a lock.
        with _lock:
            sources = list(_sources)
        return _families([(source.name, source.stats()) for source in sources])

    def describe(self) -> list[Any]:
        return list(_families([]))  # the names, so the registry can detect clashes


def register(source: StatsSource) -> None:
    """Export `source`'s counters through prometheus-client (if installed)."""
    global _registered  # noqa: PLW0603 - one collector per process
    with _lock:
        _sources.add(source)
        if _registered:
            return
        try:
            from prometheus_client import REGISTRY  # noqa: PLC0415
        except ImportError:
            return
        REGISTRY.register(_Collector())
        _registered = True


def unregister(source: StatsSource) -> None:
    with _lock:
        _sources.discard(source)
