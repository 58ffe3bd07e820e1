"""Prometheus gauges and counters read from the store at scrape time: the database
pools (db_pool_*) and UserExists' read path (auth_state_cache_*, auth_lookup_*).
`track_pool` / `track_lookup` register a live object and return its untrack."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Iterator

import asyncpg
from prometheus_client import REGISTRY
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from auth_service.store.lookup import StateLookup


class _PoolCollector(Collector):
    """Database pool gauges, read from the live asyncpg pools at scrape time."""

    def __init__(self) -> None:
        self.pools: list[asyncpg.Pool] = []

    def collect(self) -> Iterator[GaugeMetricFamily]:
        pools = list(self.pools)
        size = sum(p.get_size() for p in pools)
        idle = sum(p.get_idle_size() for p in pools)
        yield GaugeMetricFamily("db_pool_size", "Open connections in the database pool", size)
        yield GaugeMetricFamily(
            "db_pool_in_use", "Pool connections checked out by a request", size - idle
        )
        yield GaugeMetricFamily("db_pool_idle", "Open pool connections waiting for work", idle)
        yield GaugeMetricFamily(
            "db_pool_max_size",
            "Most connections the pool may open (DB_POOL_MAX_SIZE)",
            sum(p.get_max_size() for p in pools),
        )


_POOLS = _PoolCollector()
REGISTRY.register(_POOLS)


def track_pool(pool: asyncpg.Pool) -> Callable[[], Awaitable[None]]:
    """Report `pool` in the db_pool_* gauges; returns an async function that stops it."""
    _POOLS.pools.append(pool)

    async def untrack() -> None:
        with contextlib.suppress(ValueError):
            _POOLS.pools.remove(pool)

    return untrack


class _LookupCollector(Collector):
    """UserExists' read path (store/lookup.py): the state cache and the merged
    queries, read from the live lookups at scrape time."""

    def __init__(self) -> None:
        self.lookups: list[StateLookup] = []

    def collect(self) -> Iterator[Metric]:
        live = list(self.lookups)

        def total(attr: str) -> int:
            return sum(int(getattr(lookup, attr)) for lookup in live)

        yield CounterMetricFamily(
            "auth_state_cache_hits",
            "UserExists lookups answered from the server's state cache (no query)",
            total("hits"),
        )
        yield CounterMetricFamily(
            "auth_lookup_lookups",
            "UserExists lookups that went to the database (merged into shared queries)",
            total("lookups"),
        )
        yield CounterMetricFamily(
            "auth_lookup_queries", "State queries sent for UserExists lookups", total("batches")
        )
        yield CounterMetricFamily(
            "auth_lookup_windows",
            "State queries that waited for a collection window (many calls in flight)",
            total("windows"),
        )
        yield GaugeMetricFamily(
            "auth_state_cache_entries",
            "User states in the server's cache",
            sum(len(lookup.cache) for lookup in live),
        )
        yield GaugeMetricFamily(
            "auth_state_cache_enabled",
            "1 while the cache serves (its change feed listens), 0 while it is bypassed",
            sum(int(lookup.cache.enabled) for lookup in live),
        )
        indexes = [lookup.cache.index for lookup in live if lookup.cache.enabled]
        yield GaugeMetricFamily(
            "auth_state_index_users",
            "Users in the server's index of every user (0 while none is loaded)",
            sum(len(index) for index in indexes if index is not None),
        )
        yield GaugeMetricFamily(
            "auth_state_index_stale",
            "Ids changed since the index was loaded (answered by the cache or a query)",
            sum(len(index.stale) for index in indexes if index is not None),
        )
        yield CounterMetricFamily(
            "auth_state_index_loads",
            "Indexes of every user loaded (at each LISTEN session, after bulk changes)",
            sum(lookup.cache.index_loads for lookup in live),
        )


_LOOKUPS = _LookupCollector()
REGISTRY.register(_LOOKUPS)


def track_lookup(lookup: StateLookup) -> Callable[[], Awaitable[None]]:
    """Report `lookup` in the auth_lookup_* / auth_state_cache_* families; returns
    an async function that stops it."""
    _LOOKUPS.lookups.append(lookup)

    async def untrack() -> None:
        with contextlib.suppress(ValueError):
            _LOOKUPS.lookups.remove(lookup)

    return untrack


__all__ = ["track_lookup", "track_pool"]
