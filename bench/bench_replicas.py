"""Read replicas (#27 items 3 and 5): the replay lag of a real hot standby, what
the rule "NOT_FOUND only from the primary" costs under a flood of unknown ids, and
a model of both at platform scale. Starts its own embedded PostgreSQL primary, a
hot standby of it (`pg_basebackup -R`, streaming) and an `auth-service serve`
subprocess, all on free loopback ports.

    .venv/bin/python -m bench.bench_replicas                # measure, then the model
    .venv/bin/python -m bench.bench_replicas --model-only   # the model on MEASURED

1. Replay lag. The bench database runs with `synchronous_commit=on` (ALTER
   DATABASE: the embedded server starts with it off, and then a commit's WAL may
   wait up to wal_writer_delay, 200 ms, before the walsender ships it; a
   production primary commits synchronously). While a background connection
   creates WRITER_RATE users per second on the primary, LAG_SAMPLES samples, one at
   a time: create a user; at t, as its commit returns, read
   `pg_current_wal_insert_lsn()` on the primary; poll the standby's
   `pg_last_wal_replay_lsn()` about every millisecond until it is at or past that
   position; lag = that poll's return - t (an upper bound, about 1 ms resolution).
   The same with `synchronous_commit=off` (the embedded server's own setting) for
   ASYNC_SAMPLES samples.
2. A flood of unknown ids. `serve` reads the standby (DATABASE_READ_URL) and has
   its index of every user loaded (STATE_INDEX_MAX_USERS default, USERS users): an
   id the index does not know goes straight to the primary, merged with the other
   lookups (store/lookup.py). UserExists of random uuid4 ids at each of
   FLOOD_RATES (open loop, grpcload -r, FLOOD_SECONDS each; latency from each
   call's scheduled time), then BatchUserExists of 1,000 random ids per call
   (closed loop, BATCH_IN_FLIGHT calls in flight). From the server's /metrics,
   before and after each run: `auth_lookup_queries_total` (all of them primary
   queries here), `auth_lookup_lookups_total`, `auth_lookup_confirmations_total`,
   `auth_db_replica_reads_total`, `grpc_server_handled_total`. Then a second
   server with RATE_LIMIT_RPS=LIMIT_RPS (burst: one second's worth) and the same
   UserExists flood from its one caller at LIMITED_RATES: the shares of the calls
   the server answered RESOURCE_EXHAUSTED and UNAVAILABLE, by its own count.
3. The model (`evaluate()`, `Scenario`, `model_table()`): N services x M
   auth-service processes x K replicas, 100M users, 200k validations/s, fed with
   the lag distribution of 1 and the ids per primary query of 2. Deterministic;
   every assumption is a field of `Scenario`.

`run()` returns the measured figures (and two of the model's); `main()` prints
them and the model's table. Never asserted in tests.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import math
import os
import platform
import random
import statistics
import sys
import time
import uuid
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import asyncpg
import grpc

from auth_client.contract import auth_pb2
from auth_service.local.embedded import EmbeddedPostgres
from auth_service.store.migrations import migrate
from bench import grpcload
from bench.load import LoadResult, LoadSpec
from bench.server import Features, ServerProcess

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterator, Sequence

USERS = 20_000
WRITER_RATE = 300.0  # background user creations per second during the lag samples
LAG_SAMPLES = 300
ASYNC_SAMPLES = 100
SAMPLE_GAP_S = (0.005, 0.015)  # pause between two samples, drawn uniformly
POLL_S = 0.001
FLOOD_RATES = (200, 1000, 3000)  # UserExists of unknown ids per second, offered
FLOOD_SECONDS = 4.0
BATCH_IDS = 1000
BATCH_SECONDS = 3.0
BATCH_IN_FLIGHT = 4
LIMIT_RPS = 200  # RATE_LIMIT_RPS of the second server
LIMITED_RATES = (1000, 3000)
USER_EXISTS = "/auth.v1.AuthService/UserExists"
BATCH_USER_EXISTS = "/auth.v1.AuthService/BatchUserExists"

_PRIMARY_POSITION = "SELECT (pg_current_wal_insert_lsn() - '0/0'::pg_lsn)::bigint"
_REPLAY_POSITION = "SELECT (pg_last_wal_replay_lsn() - '0/0'::pg_lsn)::bigint"
_CREATE = "INSERT INTO users (id, username, display_name) VALUES ($1, $2, $2)"
_SEED = """
INSERT INTO users (id, username, display_name)
SELECT gen_random_uuid(), 'seed_' || g, 'seed_' || g FROM generate_series(1, $1) AS g
"""
_COUNTERS = {
    "queries": "auth_lookup_queries_total",
    "lookups": "auth_lookup_lookups_total",
    "confirmations": "auth_lookup_confirmations_total",
    "replica_reads": "auth_db_replica_reads_total",
}


# -- 1. replay lag ----------------------------------------------------------------


def _pct(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _create(conn: asyncpg.Connection) -> None:
    user_id = uuid.uuid4()
    await conn.execute(_CREATE, user_id, f"lag_{user_id.hex[:20]}")


async def _writer(url: str, rate: float, stop: asyncio.Event, *, sync: bool) -> float:
    """Create `rate` users per second until `stop`; the rate achieved."""
    conn = await asyncpg.connect(url)
    try:
        if not sync:
            await conn.execute("SET synchronous_commit = off")
        loop = asyncio.get_running_loop()
        started = loop.time()
        done = 0
        while not stop.is_set():
            await _create(conn)
            done += 1
            delay = started + done / rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
        return done / (loop.time() - started)
    finally:
        await conn.close()


async def _replay_lags(url: str, standby_url: str, count: int, *, sync: bool) -> dict[str, float]:
    """Replay lag samples (ms) under a background writer; see the module docstring."""
    stop = asyncio.Event()
    writer = asyncio.create_task(_writer(url, WRITER_RATE, stop, sync=sync))
    primary = await asyncpg.connect(url)
    standby = await asyncpg.connect(standby_url)
    lags: list[float] = []
    try:
        if not sync:
            await primary.execute("SET synchronous_commit = off")
        await asyncio.sleep(0.5)  # the writer at its rate first
        for _ in range(count):
            await _create(primary)
            t = time.perf_counter()
            target = await primary.fetchval(_PRIMARY_POSITION)
            while await standby.fetchval(_REPLAY_POSITION) < target:
                await asyncio.sleep(POLL_S)
            lags.append((time.perf_counter() - t) * 1000)
            await asyncio.sleep(random.uniform(*SAMPLE_GAP_S))
    finally:
        stop.set()
        writer_rate = await writer
        await primary.close()
        await standby.close()
    return {
        "p50_ms": statistics.median(lags),
        "p99_ms": _pct(lags, 0.99),
        "max_ms": max(lags),
        "mean_ms": statistics.fmean(lags),
        "writer_per_s": writer_rate,
    }


async def _replay_lag(url: str, standby_url: str) -> dict[str, float]:
    on = await _replay_lags(url, standby_url, LAG_SAMPLES, sync=True)
    off = await _replay_lags(url, standby_url, ASYNC_SAMPLES, sync=False)
    figures = {f"replay_lag_{k}": v for k, v in on.items()}
    figures |= {
        "replay_lag_async_p50_ms": off["p50_ms"],
        "replay_lag_async_p99_ms": off["p99_ms"],
    }
    return figures


# -- 2. a flood of unknown ids ----------------------------------------------------


def _user_exists_bodies(count: int) -> list[bytes]:
    return [
        auth_pb2.UserExistsRequest(user_id=str(uuid.uuid4())).SerializeToString()
        for _ in range(count)
    ]


def _batch_bodies(count: int) -> list[bytes]:
    return [
        auth_pb2.BatchUserExistsRequest(
            user_ids=[str(uuid.uuid4()) for _ in range(BATCH_IDS)], states_only=True
        ).SerializeToString()
        for _ in range(count)
    ]


class _PythonLoad:
    """Fallback without a C compiler: grpc.aio in this process, open loop (`rate`)
    or closed loop. It manages about 2-3k calls/s, so at the highest rates it
    measures itself, not the server: `python_load_generator` says it ran."""

    async def run(self, spec: LoadSpec) -> LoadResult:
        result = LoadResult()
        bodies = itertools.cycle(spec.bodies)
        async with grpc.aio.insecure_channel(spec.target) as channel:
            call = channel.unary_unary(spec.path, None, None)

            async def one(due: float) -> None:
                try:
                    await call(next(bodies), metadata=spec.headers, timeout=10)
                    result.ok += 1
                except grpc.aio.AioRpcError:
                    result.failed += 1
                result.done += 1
                result.latencies_us.append(int((time.perf_counter() - due) * 1e6))

            started = time.perf_counter()
            if spec.rate is None:
                await _closed_loop(one, spec.in_flight, started + spec.duration)
            else:
                await _open_loop(one, spec.rate, spec.in_flight, started + spec.duration)
            result.seconds = time.perf_counter() - started
        result.rps = result.done / result.seconds
        return result


async def _closed_loop(one: Callable[[float], Awaitable[None]], workers: int, end: float) -> None:
    async def worker() -> None:
        while (now := time.perf_counter()) < end:
            await one(now)

    await asyncio.gather(*(worker() for _ in range(workers)))


async def _open_loop(
    one: Callable[[float], Awaitable[None]], rate: float, in_flight: int, end: float
) -> None:
    gate = asyncio.Semaphore(in_flight)
    start = time.perf_counter()

    async def gated(due: float) -> None:
        async with gate:
            await one(due)

    tasks: list[asyncio.Task[None]] = []
    while (due := start + len(tasks) / rate) < end:
        if (wait := due - time.perf_counter()) > 0:
            await asyncio.sleep(wait)
        tasks.append(asyncio.create_task(gated(due)))
    await asyncio.gather(*tasks)


def _generator() -> grpcload.GrpcLoad | _PythonLoad:
    binary = grpcload.build()
    return grpcload.GrpcLoad(binary) if binary is not None else _PythonLoad()


@dataclass
class _Run:
    """One load run and the server's counters over it."""

    load: LoadResult
    delta: dict[str, float]

    @property
    def seconds(self) -> float:
        return max(self.load.seconds, 1e-6)

    def per_s(self, key: str) -> float:
        return self.delta.get(key, 0.0) / self.seconds

    def code(self, code: str) -> float:
        """Calls the server answered with `code` (grpc_server_handled_total)."""
        return sum(v for k, v in self.delta.items() if k.endswith(f":{code}"))

    def calls(self) -> float:
        """Calls the server answered, any code."""
        return sum(v for k, v in self.delta.items() if ":" in k)

    def latency_ms(self, q: float) -> float:
        lat = self.load.latencies_us
        return _pct(lat, q) / 1000 if lat else math.nan


def _snapshot(server: ServerProcess) -> dict[str, float]:
    out = {key: server.total(name) or 0.0 for key, name in _COUNTERS.items()}
    for (method, code), value in (server.handled() or {}).items():
        out[f"{method}:{code}"] = value
    return out


async def _measure(
    server: ServerProcess,
    load: grpcload.GrpcLoad | _PythonLoad,
    path: str,
    bodies: list[bytes],
    *,
    rate: float | None,
    seconds: float,
    in_flight: int,
) -> _Run:
    before = await asyncio.to_thread(_snapshot, server)
    spec = LoadSpec(
        target=server.target,
        path=path,
        bodies=bodies,
        response_sizes=[0],
        headers=server.metadata,
        connections=1 if in_flight <= 64 else 2,
        streams=in_flight if in_flight <= 64 else in_flight // 2,
        duration=seconds,
        rate=rate,
        latencies=True,
        workers=1,
    )
    result = await load.run(spec)
    after = await asyncio.to_thread(_snapshot, server)
    return _Run(result, {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after})


def _flood_figures(prefix: str, run: _Run) -> dict[str, float]:
    queries = run.delta.get("queries", 0.0)
    return {
        f"{prefix}_answered_per_s": run.load.ok / run.seconds,
        f"{prefix}_primary_queries_per_s": run.per_s("queries"),
        f"{prefix}_ids_per_primary_query": run.delta.get("lookups", 0.0) / max(queries, 1.0),
        f"{prefix}_confirmations_per_s": run.per_s("confirmations"),
        f"{prefix}_replica_reads_per_s": run.per_s("replica_reads"),
        f"{prefix}_p50_ms": run.latency_ms(0.50),
        f"{prefix}_p99_ms": run.latency_ms(0.99),
    }


async def _until_replica_read(server: ServerProcess, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while (await asyncio.to_thread(server.total, "auth_db_replica_up") or 0) < 1:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the server does not read the standby:\n{server.log_tail()}")
        await asyncio.sleep(0.2)


def _server_env(standby_url: str, rate_limit: float) -> dict[str, str]:
    return {
        "DATABASE_READ_URL": standby_url,
        "STATE_INDEX_MAX_USERS": "5000000",  # the default, whatever the caller's shell says
        "STATE_CACHE_SIZE": "200000",
        "RATE_LIMIT_RPS": f"{rate_limit:g}",
    }


async def _floods(url: str, standby_url: str, features: Features) -> dict[str, float]:
    load = _generator()
    figures: dict[str, float] = {}
    async with ServerProcess(url, features, env=_server_env(standby_url, 0)) as server:
        await _until_replica_read(server)
        await _measure(  # warm-up: connections, code paths
            server, load, USER_EXISTS, _user_exists_bodies(200), rate=200, seconds=1, in_flight=64
        )
        for rate in FLOOD_RATES:
            bodies = _user_exists_bodies(int(rate * FLOOD_SECONDS * 1.2))
            run = await _measure(
                server, load, USER_EXISTS, bodies, rate=rate, seconds=FLOOD_SECONDS, in_flight=256
            )
            figures |= _flood_figures(f"flood_{rate}", run)
        run = await _measure(
            server,
            load,
            BATCH_USER_EXISTS,
            _batch_bodies(40),
            rate=None,
            seconds=BATCH_SECONDS,
            in_flight=BATCH_IN_FLIGHT,
        )
        batch = _flood_figures("batch", run)
        figures |= {
            "batch_ids_per_s": batch.pop("batch_answered_per_s") * BATCH_IDS,
            "batch_primary_queries_per_call": run.delta.get("queries", 0.0) / max(run.load.ok, 1),
            **batch,
        }
    env = _server_env(standby_url, LIMIT_RPS)
    async with ServerProcess(url, features, env=env) as server:
        await _until_replica_read(server)
        for rate in LIMITED_RATES:
            bodies = _user_exists_bodies(int(rate * FLOOD_SECONDS * 1.2))
            run = await _measure(
                server, load, USER_EXISTS, bodies, rate=rate, seconds=FLOOD_SECONDS, in_flight=256
            )
            # Shares of the calls the server answered, by its own count.
            calls = max(run.calls(), 1.0)
            figures |= {
                f"limited_{rate}_calls_per_s": calls / run.seconds,
                f"limited_{rate}_answered_per_s": run.load.ok / run.seconds,
                f"limited_{rate}_exhausted_share": run.code("ResourceExhausted") / calls,
                f"limited_{rate}_unavailable_share": run.code("Unavailable") / calls,
                f"limited_{rate}_primary_queries_per_s": run.per_s("queries"),
            }
    if isinstance(load, _PythonLoad):  # the highest rates measured the generator
        figures["python_load_generator"] = 1.0
    return figures


# -- the database pair --------------------------------------------------------------


async def _bench_database(primary: EmbeddedPostgres) -> str:
    """A migrated database on the primary holding USERS users, committing synchronously."""
    name = f"bench_replicas_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(primary.url)
    try:
        await conn.execute(f"CREATE DATABASE {name}")
        await conn.execute(f"ALTER DATABASE {name} SET synchronous_commit = on")
    finally:
        await conn.close()
    url = primary.url_for(name)
    await asyncio.to_thread(migrate, url)
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(_SEED, USERS)
    finally:
        await conn.close()
    return name


async def _caught_up(primary_url: str, standby_url: str, timeout: float = 30.0) -> None:
    conn = await asyncpg.connect(primary_url)
    try:
        target = await conn.fetchval(_PRIMARY_POSITION)
    finally:
        await conn.close()
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(OSError, asyncpg.PostgresError):
            standby = await asyncpg.connect(standby_url)
            try:
                if (await standby.fetchval(_REPLAY_POSITION) or 0) >= target:
                    return
            finally:
                await standby.close()
        if time.monotonic() > deadline:
            raise RuntimeError("the standby did not catch up with the primary")
        await asyncio.sleep(0.05)


async def run() -> dict[str, float]:
    """Measure on a fresh primary + standby pair; the figures, with two of the
    model's (its base scenario fed with them)."""
    features = await asyncio.to_thread(Features)
    with contextlib.ExitStack() as stack:
        primary = EmbeddedPostgres()
        stack.callback(primary.close)
        await asyncio.to_thread(primary.start)
        name = await _bench_database(primary)
        standby = await asyncio.to_thread(primary.standby)
        stack.callback(standby.close)
        await asyncio.to_thread(standby.start)
        url, standby_url = primary.url_for(name), standby.url_for(name)
        await _caught_up(url, standby_url)
        figures = await _replay_lag(url, standby_url)
        figures |= await _floods(url, standby_url, features)
    base = evaluate(BASE, Measured.from_figures(figures))
    figures["model_primary_queries_per_s"] = base.primary_qps
    figures["model_primary_queries_per_1pct_unknown"] = base.primary_per_pct_unknown
    return figures


# -- 3. the model -------------------------------------------------------------------


@dataclass(frozen=True)
class Measured:
    """What the model takes from the measurement: the replay lag and how many ids
    one merged query carries at a given rate of ids per process."""

    lag_p50_ms: float
    lag_p99_ms: float
    lag_max_ms: float
    lag_mean_ms: float
    # (ids/s into one process's merger, ids per query), ascending
    ids_per_query: tuple[tuple[float, float], ...]

    @classmethod
    def from_figures(cls, figures: dict[str, float]) -> Measured:
        points = sorted(
            (figures[f"flood_{r}_answered_per_s"], figures[f"flood_{r}_ids_per_primary_query"])
            for r in FLOOD_RATES
        )
        return cls(
            figures["replay_lag_p50_ms"],
            figures["replay_lag_p99_ms"],
            figures["replay_lag_max_ms"],
            figures["replay_lag_mean_ms"],
            tuple(points),
        )

    def batch(self, rate: float) -> float:
        """Ids per merged query at `rate` ids/s into one merger: linear between the
        measured points, 1 at rate 0, the last point's value beyond it."""
        points = [(0.0, 1.0), *self.ids_per_query]
        for (x0, y0), (x1, y1) in itertools.pairwise(points):
            if rate <= x1:
                return max(1.0, y0 + (y1 - y0) * (rate - x0) / max(x1 - x0, 1e-9))
        return max(1.0, points[-1][1])


# The figures of run B in bench/RESULTS.md, History 13 (code 7269922), for
# `--model-only`.
MEASURED = Measured(
    lag_p50_ms=0.56,
    lag_p99_ms=2.32,
    lag_max_ms=2.55,
    lag_mean_ms=0.66,
    ids_per_query=((200.0, 1.00), (999.75, 1.00), (2252.25, 1.32)),
)


@dataclass(frozen=True)
class Scenario:
    """One platform. Every assumption of the model is a field."""

    label: str
    replicas: int = 3  # K: PostgreSQL hot standbys (0: every read on the primary)
    processes: int = 100  # M: auth-service processes (round robin)
    users: int = 100_000_000  # popularity Zipf(1): p(rank k) ~ 1/k
    validations_per_s: float = 200_000.0  # lookups by every service, before their caches
    services: int = 50  # N: callers, one token each
    pods_per_service: int = 10  # AuthClient processes per service (each its own cache)
    client_ttl_s: float = 30.0  # CacheConfig.positive_ttl
    state_cache_size: int = 200_000  # STATE_CACHE_SIZE, per process (FIFO)
    index: bool = False  # index of every user: 1.7 GB per process at 100M, above 5M: off
    unknown_share: float = 0.0001  # of validations: ids that do not exist (never cached)
    flood_ids_per_s: float = 0.0  # unknown ids from one bad caller, spread over M
    flood_ids_per_call: int = 1  # 1: UserExists (merged); 1000: BatchUserExists
    rate_limit_rps: float = 0.0  # RATE_LIMIT_RPS: per caller and process
    creations_per_s: float = 20.0
    deletions_per_s: float = 5.0
    lookups_after_creation: float = 1.0  # lookups of a new user within the replay lag
    monitor_per_s: float = 4.0  # replica checks per process (4 / DATABASE_READ_MAX_LAG_MS)
    notify_ms: float = 1.0  # a change's NOTIFY reaching every process (memory's staleness)
    # Calls/s one process answers (docs/operations.md, Scale out): each with a
    # query / from memory (the index).
    process_capacity: float = 1_700.0
    process_capacity_memory: float = 2_000.0


@dataclass
class Outcome:
    scenario: Scenario
    calls_per_process: float = 0.0
    processes_needed: int = 0
    client_hit: float = 0.0
    server_hit: float = 0.0
    server_hit_if_filled: float = 0.0
    replica_qps: float = 0.0  # per replica
    replica_ids: float = 0.0  # per replica
    confirm_qps: float = 0.0  # NOT_FOUND confirmations on the primary
    primary_qps: float = 0.0  # everything on the primary
    primary_if_replicas_down: float = 0.0
    primary_per_pct_unknown: float = 0.0
    stale_share_uniform: float = 0.0
    stale_share_popular: float = 0.0
    stale_head_answers: float = 0.0  # stale answers when the most popular user is deleted
    stale_window_ms: tuple[float, float, float] = (0.0, 0.0, 0.0)


_GAMMA = 0.5772156649015329


def _harmonic(n: float) -> float:
    if n < 1:
        return 0.0
    if n < 1000:
        return sum(1.0 / k for k in range(1, int(n) + 1))
    return math.log(n) + _GAMMA + 1 / (2 * n) - 1 / (12 * n * n)


def zipf_groups(users: int, exact: int = 1000, ratio: float = 1.02) -> list[tuple[int, float]]:
    """Zipf(1) over ranks 1..users as (how many ids, probability of each): the first
    `exact` ranks one by one, then geometric groups."""
    total = _harmonic(users)
    groups = [(1, 1 / (k * total)) for k in range(1, min(exact, users) + 1)]
    low = exact + 1
    while low <= users:
        high = min(users, max(low, int(low * ratio)))
        count = high - low + 1
        groups.append((count, (_harmonic(high) - _harmonic(low - 1)) / (count * total)))
        low = high + 1
    return groups


def fifo_hit_ratio(rates: Sequence[tuple[int, float]], size: int) -> float:
    """Hit ratio of a FIFO cache of `size` entries (StateCache drops the least
    recently stored) under independent requests at per-id `rates`: the
    characteristic-time approximation, hit(id) = rT / (1 + rT) with T such that
    the expected entries sum to `size`."""
    if size >= sum(n for n, _ in rates):
        return 1.0

    def entries(t: float) -> float:
        return sum(n * r * t / (1 + r * t) for n, r in rates)

    low, high = 1e-9, 1e15
    for _ in range(200):
        mid = math.sqrt(low * high)
        low, high = (mid, high) if entries(mid) < size else (low, mid)
    t = math.sqrt(low * high)
    total = sum(n * r for n, r in rates)
    return sum(n * r * (r * t / (1 + r * t)) for n, r in rates) / total


@dataclass(frozen=True)
class _Traffic:
    """Ids per second reaching the auth-service processes, by kind."""

    known: float  # lookups of existing users the clients' caches missed
    single_unknown: float  # unknown ids in single-id calls (merged)
    batch_calls: float  # BatchUserExists calls of the flood (a query each)
    batch_ids: float
    new_users: float  # lookups of users created less than a replay lag ago

    @property
    def confirm(self) -> float:
        return self.single_unknown + self.new_users


def evaluate(s: Scenario, m: Measured) -> Outcome:
    """Loads and staleness of scenario `s` (see `Scenario` for the assumptions)."""
    o = Outcome(s)
    known = s.validations_per_s * (1 - s.unknown_share)
    clients = s.services * s.pods_per_service
    # Each AuthClient process sees its share of every id's lookups; a TTL cache
    # misses once per TTL: residual rate r / (1 + r * ttl / clients).
    residual = [
        (n, known * p / (1 + known * p * s.client_ttl_s / clients)) for n, p in zipf_groups(s.users)
    ]
    to_servers = sum(n * r for n, r in residual)
    o.client_hit = 1 - to_servers / known
    per_process = [(n, r / s.processes) for n, r in residual]
    o.server_hit_if_filled = fifo_hit_ratio(per_process, s.state_cache_size)
    # Replica answers are kept in the state cache too (store/state_cache.py: an
    # ACTIVE unless the id was announced after the replica was known complete,
    # a few ids a second against 100M).
    o.server_hit = 1.0 if s.index else o.server_hit_if_filled
    legit_unknown = s.validations_per_s * s.unknown_share
    flood = _admitted_flood(s)
    single = s.flood_ids_per_call == 1
    traffic = _Traffic(
        known=to_servers,
        single_unknown=legit_unknown + (flood if single else 0.0),
        batch_calls=0.0 if single else flood / s.flood_ids_per_call,
        batch_ids=0.0 if single else flood,
        new_users=s.creations_per_s * s.lookups_after_creation,
    )
    o.calls_per_process = (to_servers + traffic.single_unknown + traffic.batch_calls) / s.processes
    capacity = s.process_capacity_memory if s.index else s.process_capacity
    o.processes_needed = math.ceil(o.calls_per_process * s.processes / capacity)
    _loads(o, s, m, traffic)
    _staleness(o, s, m, residual, to_servers + legit_unknown + flood)
    return o


def _loads(o: Outcome, s: Scenario, m: Measured, t: _Traffic) -> None:
    """Queries per second on the primary and on each replica. Single-id lookups go
    through the mergers; a BatchUserExists call is one read query and one
    confirmation query, not merged across calls."""
    writes = s.creations_per_s + s.deletions_per_s
    # Known ids that need a query: all of them unless memory answers (the index,
    # or the state cache, which replica and primary answers fill).
    misses = t.known * (1 - o.server_hit)
    misses_on_primary = t.known * (0.0 if s.index else 1 - o.server_hit_if_filled)
    primary_alone = _merged(misses_on_primary + t.confirm, s.processes, m) + t.batch_calls
    if s.replicas:
        # Without the index an unknown id is read on a replica first, then confirmed.
        reads_in = misses + (0.0 if s.index else t.confirm)
        read_queries = _merged(reads_in, s.processes, m) + (0.0 if s.index else t.batch_calls)
        read_ids = reads_in + (0.0 if s.index else t.batch_ids)
        monitor = s.processes * s.monitor_per_s
        o.replica_qps = read_queries / s.replicas + monitor
        o.replica_ids = read_ids / s.replicas
        o.confirm_qps = _merged(t.confirm, s.processes, m) + t.batch_calls
        o.primary_qps = o.confirm_qps + monitor + writes
        o.primary_if_replicas_down = primary_alone + monitor + writes
        base = t.confirm
    else:
        # One merger does reads and confirmations: an unknown id is one query.
        o.primary_qps = o.primary_if_replicas_down = primary_alone + writes
        base = misses_on_primary + t.confirm
    extra = 0.01 * s.validations_per_s
    o.primary_per_pct_unknown = _merged(base + extra, s.processes, m) - _merged(
        base, s.processes, m
    )


def _admitted_flood(s: Scenario) -> float:
    if not s.flood_ids_per_s:
        return 0.0
    calls_per_process = s.flood_ids_per_s / s.flood_ids_per_call / s.processes
    if s.rate_limit_rps:
        calls_per_process = min(calls_per_process, s.rate_limit_rps)
    return calls_per_process * s.flood_ids_per_call * s.processes


def _merged(ids_per_s: float, processes: int, m: Measured) -> float:
    """Queries per second for `ids_per_s` single-id lookups spread over `processes`
    mergers, each carrying the measured ids per query at its rate."""
    if ids_per_s <= 0:
        return 0.0
    per_process = ids_per_s / processes
    return processes * per_process / m.batch(per_process)


def _staleness(
    o: Outcome, s: Scenario, m: Measured, residual: list[tuple[int, float]], answers: float
) -> None:
    """Stale ACTIVE answers: a deleted user's lookups that reach a replica before it
    replays the deletion (with replicas), or memory before the NOTIFY (without)."""
    if s.replicas:
        window = (m.lag_p50_ms, m.lag_p99_ms, m.lag_max_ms)
        mean_s = m.lag_mean_ms / 1000
    else:
        window = (s.notify_ms, s.notify_ms, s.notify_ms)
        mean_s = s.notify_ms / 1000
    o.stale_window_ms = window
    total_rate = sum(n * r for n, r in residual)
    # A user deleted uniformly at random: the mean rate of a user.
    uniform_rate = total_rate / s.users
    # Deleted in proportion to popularity (hot users matter): E[rate] over p.
    popular_rate = sum(n * (r / total_rate) * r for n, r in residual)
    # Without replicas only memory's answers can be stale (the primary's are not).
    from_memory = 1.0 if s.replicas else o.server_hit
    o.stale_share_uniform = s.deletions_per_s * uniform_rate * mean_s * from_memory / answers
    o.stale_share_popular = s.deletions_per_s * popular_rate * mean_s * from_memory / answers
    o.stale_head_answers = residual[0][1] * window[1] / 1000


BASE = Scenario("K=3, M=100")
SCENARIOS = (
    Scenario("K=0 (every read on the primary), M=100", replicas=0),
    Scenario("K=1, M=100", replicas=1),
    BASE,
    Scenario("K=3, M=50", processes=50),
    Scenario("K=3, M=200", processes=200),
    Scenario("K=3, M=100, 1% unknown ids", unknown_share=0.01),
    Scenario("K=3, M=100, index of every user loaded (1.7 GB per process)", index=True),
    Scenario("K=3, M=100, + a flood of 10k unknown ids/s (UserExists)", flood_ids_per_s=10_000),
    Scenario(
        "K=3, M=100, + the same flood, RATE_LIMIT_RPS=50",
        flood_ids_per_s=10_000,
        rate_limit_rps=50,
    ),
    Scenario(
        "K=3, M=100, + the same flood as BatchUserExists of 1,000 ids",
        flood_ids_per_s=10_000,
        flood_ids_per_call=1000,
    ),
)


def _num(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 1:
        return f"{value:.1f}"
    return f"{value:.2f}"


def _share(value: float) -> str:
    return f"{value:.1e}" if value else "0"


def model_table(m: Measured, scenarios: Sequence[Scenario] = SCENARIOS) -> Iterator[str]:
    """The model's table (Markdown) and a line on the state cache."""
    yield (
        "| scenario | calls/s per process (processes needed) | hit: client / server memory"
        " | per replica: queries/s (ids/s) | primary: queries/s (of which NOT_FOUND"
        " confirmations) | primary, replicas down | primary queries/s per +1% unknown ids"
        " | stale ACTIVE share: uniform / by popularity | stale for p50 / p99 / max ms"
        " | stale answers when the top user is deleted |"
    )
    yield "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    for scenario in scenarios:
        o = evaluate(scenario, m)
        replica = f"{_num(o.replica_qps)} ({_num(o.replica_ids)})" if scenario.replicas else "-"
        window = " / ".join(_num(w) for w in o.stale_window_ms)
        yield (
            f"| {scenario.label} | {_num(o.calls_per_process)} ({o.processes_needed})"
            f" | {o.client_hit:.2f} / {o.server_hit:.2f} | {replica}"
            f" | {_num(o.primary_qps)} ({_num(o.confirm_qps)})"
            f" | {_num(o.primary_if_replicas_down)} | {_num(o.primary_per_pct_unknown)}"
            f" | {_share(o.stale_share_uniform)} / {_share(o.stale_share_popular)}"
            f" | {window} | {_num(o.stale_head_answers)} |"
        )
    base = evaluate(replace(BASE, replicas=0), m)
    yield ""
    yield (
        f"Server state cache (FIFO, {BASE.state_cache_size:,} per process) on what the"
        f" clients miss, were it filled: {base.server_hit_if_filled:.2f} hit ratio."
    )


# -- printing -----------------------------------------------------------------------


def _print_figures(figures: dict[str, float]) -> None:
    print(
        f"bench_replicas on {platform.node()} ({os.cpu_count()} cores),"
        f" python {sys.version.split()[0]}"
    )
    print(
        f"  {USERS:,} users; lag: {LAG_SAMPLES} samples (synchronous_commit=on) and"
        f" {ASYNC_SAMPLES} (off) under ~{WRITER_RATE:.0f} creations/s;"
        f" floods {FLOOD_SECONDS:g} s each; RATE_LIMIT_RPS={LIMIT_RPS} for limited_*"
    )
    for name, value in figures.items():
        print(f"  {name:<42} {value:12.2f}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="Read replicas: replay lag, NOT_FOUND floods, model"
    )
    parser.add_argument(
        "--model-only", action="store_true", help="print the model on MEASURED, measure nothing"
    )
    args = parser.parse_args(argv)
    if args.model_only:
        measured = MEASURED
    else:
        started, load_before = time.monotonic(), os.getloadavg()[0]
        figures = asyncio.run(run())
        _print_figures(figures)
        print(
            f"  (measured in {time.monotonic() - started:.0f} s; 1-minute load average"
            f" {load_before:.1f} before, {os.getloadavg()[0]:.1f} after)"
        )
        measured = Measured.from_figures(figures)
    print()
    print(
        f"Model: lag p50/p99/max {measured.lag_p50_ms:.2f}/{measured.lag_p99_ms:.2f}/"
        f"{measured.lag_max_ms:.2f} ms; ids per merged query at ids/s per process: "
        + ", ".join(f"{x:,.0f} -> {y:.1f}" for x, y in measured.ids_per_query)
    )
    for line in model_table(measured):
        print(line)


if __name__ == "__main__":
    main()
