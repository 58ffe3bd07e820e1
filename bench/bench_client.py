"""auth_client benchmark: the cost of a cache hit, and RPCs per 1,000 concurrent
lookups, against a real auth-service it starts itself (embedded PostgreSQL,
migrations, an in-process AuthServer on loopback).

    .venv/bin/python bench/bench_client.py

Prints a table and returns the figures from `run()`. Never asserted in tests.
"""

from __future__ import annotations

import asyncio
import collections
import platform
import statistics
import sys
import time
import uuid
from typing import Any, cast

import asyncpg
import grpc

from auth_client import AuthClient, CacheConfig
from auth_service.api.server import AuthServer
from auth_service.config import Settings
from auth_service.local.embedded import EmbeddedPostgres
from auth_service.store.migrations import migrate

HIT_OPS = 200_000
ROUNDS = 5
CONCURRENT = 1000


class RpcCounter(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[type-arg]
    """Counts the RPCs the client sends (one per call, retries not included)."""

    def __init__(self) -> None:
        self.calls: collections.Counter[str] = collections.Counter()

    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        self.calls[type(request).__name__] += 1
        return await continuation(details, request)

    @property
    def total(self) -> int:
        return sum(self.calls.values())


async def _seed(url: str, count: int) -> list[uuid.UUID]:
    ids = [uuid.uuid4() for _ in range(count)]
    conn = await asyncpg.connect(url)
    try:
        await conn.executemany(
            "INSERT INTO users (id, username, display_name) VALUES ($1, $2, $2)",
            [(uid, f"bench_{uid.hex[:16]}") for uid in ids],
        )
    finally:
        await conn.close()
    return ids


async def _hit_cost(client: AuthClient, key: uuid.UUID | str) -> float:
    """µs per `await client.user_exists(key)` answered from the cache (best of 3)."""
    assert await client.user_exists(key)
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        for _ in range(HIT_OPS):
            await client.user_exists(key)
        best = min(best, (time.perf_counter() - started) / HIT_OPS * 1e6)
    return best


async def _rpcs_per_round(
    client: AuthClient, counter: RpcCounter, ids: list[list[uuid.UUID]]
) -> list[int]:
    """RPCs sent for each round of CONCURRENT concurrent user_exists calls."""
    out = []
    for round_ids in ids:
        before = counter.total
        answers = await asyncio.gather(*(client.user_exists(uid) for uid in round_ids))
        assert all(answers)
        out.append(counter.total - before)
    return out


async def _miss_latency(client: AuthClient, ids: list[uuid.UUID]) -> float:
    """Median ms of one uncached user_exists at no load (one RPC each)."""
    samples = []
    for uid in ids:
        started = time.perf_counter()
        await client.user_exists(uid)
        samples.append((time.perf_counter() - started) * 1e3)
    return statistics.median(samples)


async def run() -> dict[str, float]:
    pg = EmbeddedPostgres()
    await asyncio.to_thread(pg.start)
    try:
        await asyncio.to_thread(migrate, pg.url)
        users = await _seed(pg.url, ROUNDS * CONCURRENT + ROUNDS + 200)
        settings = Settings(
            database_url=pg.url,
            listen="127.0.0.1:0",
            allow_unauthenticated_reads=True,
            log_level="WARNING",
            log_format="text",
            shutdown_grace_s=0.5,
        )
        async with AuthServer(settings) as server:
            counter = RpcCounter()
            async with AuthClient(
                server.address,
                interceptors=[cast("grpc.aio.ClientInterceptor", counter)],
                timeout=5.0,
                cache=CacheConfig(positive_ttl=3600),
            ) as client:
                hot = users[-1]
                figures = {
                    "cache_hit_us_uuid": await _hit_cost(client, hot),
                    "cache_hit_us_str": await _hit_cost(client, str(hot)),
                }
                same = [[users[i]] * CONCURRENT for i in range(ROUNDS)]
                distinct_ids = users[ROUNDS : ROUNDS + ROUNDS * CONCURRENT]
                distinct = [
                    distinct_ids[i * CONCURRENT : (i + 1) * CONCURRENT] for i in range(ROUNDS)
                ]
                same_rpcs = await _rpcs_per_round(client, counter, same)
                distinct_rpcs = await _rpcs_per_round(client, counter, distinct)
                figures["rpcs_per_1000_same_id"] = statistics.mean(same_rpcs)
                figures["rpcs_per_1000_distinct_ids"] = statistics.mean(distinct_rpcs)
                miss_ids = users[ROUNDS + ROUNDS * CONCURRENT : ROUNDS + ROUNDS * CONCURRENT + 200]
                figures["miss_latency_ms_p50"] = await _miss_latency(client, miss_ids)
                assert counter.calls["BatchUserExistsRequest"] >= ROUNDS
                return figures
    finally:
        await asyncio.to_thread(pg.close)


def _report(figures: dict[str, float], loop_name: str) -> str:
    rows = [
        ("cache hit, uuid.UUID id", f"{figures['cache_hit_us_uuid']:.2f} µs/op", "target <= 2 µs"),
        ("cache hit, str id", f"{figures['cache_hit_us_str']:.2f} µs/op", "target <= 2 µs"),
        (
            "RPCs per 1,000 concurrent lookups, same id",
            f"{figures['rpcs_per_1000_same_id']:.1f}",
            "ideal 1",
        ),
        (
            "RPCs per 1,000 concurrent lookups, distinct ids",
            f"{figures['rpcs_per_1000_distinct_ids']:.1f}",
            "ideal 1 (BatchUserExists cap: 1,000 ids)",
        ),
        (
            "uncached lookup at no load (p50)",
            f"{figures['miss_latency_ms_p50']:.2f} ms",
            "one UserExists RPC",
        ),
    ]
    width = max(len(r[0]) for r in rows)
    lines = [
        (
            f"auth_client benchmark — Python {platform.python_version()}, "
            f"grpcio {grpc.__version__}, {loop_name}, {sys.platform}"
        ),
        "",
        *(f"  {name:<{width}}  {value:>12}   {note}" for name, value, note in rows),
    ]
    return "\n".join(lines)


def main() -> None:
    try:
        import uvloop  # noqa: PLC0415
    except ImportError:  # pragma: no cover
        figures, loop_name = asyncio.run(run()), "asyncio"
    else:
        figures, loop_name = uvloop.run(run()), "uvloop"
    print(_report(figures, loop_name))


if __name__ == "__main__":
    main()
