"""Prometheus gauges and counters read from the store at scrape time: the database
pools (db_pool_*), UserExists' read path (auth_state_cache_*, auth_lookup_*) and
the read replicas (auth_db_replica_*). `track_pool` / `track_lookup` /
`track_replicas` register a live object and return its untrack."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Iterator

import asyncpg
from prometheus_client import REGISTRY
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from auth_service.store.lookup import StateLookup
from auth_service.store.replicas import ReadReplicas


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
            "auth_lookup_confirmations",
            "Ids memory or a read replica called NOT_FOUND, asked again of the primary"
            " (only the primary's NOT_FOUND is answered)",
            total("confirmations"),
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


class _ReplicaCollector(Collector):
    """The read replicas (DATABASE_READ_URL, store/replicas.py): whether each is
    read, its lag, the queries it answered. Labelled by `replica` (host:port)."""

    def __init__(self) -> None:
        self.sets: list[ReadReplicas] = []

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "auth_db_replica_up",
            "1 while the read replica is read (answering, lag within DATABASE_READ_MAX_LAG_MS)",
            labels=["replica"],
        )
        lag = GaugeMetricFamily(
            "auth_db_replica_lag_seconds",
            "How long ago the primary was where the read replica's replay is now",
            labels=["replica"],
        )
        reads = CounterMetricFamily(
            "auth_db_replica_reads",
            "Read queries the replica answered (UserExists, BatchUserExists, GetUser)",
            labels=["replica"],
        )
        for replicas in list(self.sets):
            for replica in replicas.replicas:
                up.add_metric([replica.name], int(replica.readable))
                if replica.lag_s is not None:
                    lag.add_metric([replica.name], replica.lag_s)
                reads.add_metric([replica.name], replica.reads)
        yield from (up, lag, reads)


_REPLICAS = _ReplicaCollector()
REGISTRY.register(_REPLICAS)


def track_replicas(replicas: ReadReplicas) -> Callable[[], Awaitable[None]]:
    """Report `replicas` in the auth_db_replica_* families; returns its untrack."""
    _REPLICAS.sets.append(replicas)

    async def untrack() -> None:
        with contextlib.suppress(ValueError):
            _REPLICAS.sets.remove(replicas)

    return untrack
