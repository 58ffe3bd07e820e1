"""The user's question: how fast can a service insert rows that reference users,
with the foreign key (today) vs without it but validated by `require_user`?

- FK-checked: `bench_messages_fk (sender_id uuid REFERENCES users(id))` in the
  same database as the users table, as on today's platform.
- Validated: `messages (sender_id uuid)` without FK in a separate database
  (`bench_messaging`, same PostgreSQL server), each insert preceded by
  `await auth.require_user(sender_id)` through `auth_client` against the
  `auth-service serve` process.

Warm: senders drawn from 1,000 users whose answers the client has cached. Cold:
every insert has a sender never asked before (a fresh client per run): each
lookup is a cache miss and goes to the server (merged into BatchUserExists calls
by the client when concurrent). Both FK runs use the same sender streams.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass

import asyncpg

from auth_client import AuthClient, CacheConfig
from bench.context import Context
from bench.report import Section, fmt_int, median

WRITERS = 32  # concurrent request handlers of the messaging service
POOL_SIZE = 8
HOT_USERS = 1000
MESSAGING_DB = "bench_messaging"
LEAVE_FOR_OTHERS = 1000  # sampled ids left for the benchmarks after this one

_COLUMNS = """
    id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    sender_id uuid NOT NULL{fk},
    body      text NOT NULL,
    sent_at   timestamptz NOT NULL DEFAULT now()
"""


@dataclass
class Outcome:
    inserts: int
    errors: int
    seconds: float
    exhausted: bool

    @property
    def per_s(self) -> float:
        return self.inserts / self.seconds if self.seconds else 0.0


async def _drive(
    senders: Iterator[uuid.UUID],
    insert: Callable[[uuid.UUID], Awaitable[None]],
    duration: float,
) -> Outcome:
    inserts = errors = 0
    exhausted = False
    end = time.perf_counter() + duration

    async def writer() -> None:
        nonlocal inserts, errors, exhausted
        while time.perf_counter() < end:
            sender = next(senders, None)
            if sender is None:
                exhausted = True
                return
            try:
                await insert(sender)
            except Exception:
                errors += 1
            else:
                inserts += 1

    started = time.perf_counter()
    await asyncio.gather(*(writer() for _ in range(WRITERS)))
    return Outcome(inserts, errors, time.perf_counter() - started, exhausted)


def _hot(ids: list[uuid.UUID], seed: int) -> Iterator[uuid.UUID]:
    rng = random.Random(seed)
    while True:
        yield rng.choice(ids)


async def _setup(ctx: Context) -> tuple[asyncpg.Pool, asyncpg.Pool]:
    admin = await asyncpg.connect(ctx.db.server.url)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{MESSAGING_DB}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{MESSAGING_DB}"')
    finally:
        await admin.close()
    fk_pool = await asyncpg.create_pool(ctx.db.url, min_size=POOL_SIZE, max_size=POOL_SIZE)
    plain_pool = await asyncpg.create_pool(
        ctx.db.url_for(MESSAGING_DB), min_size=POOL_SIZE, max_size=POOL_SIZE
    )
    await fk_pool.execute("DROP TABLE IF EXISTS bench_messages_fk")
    await fk_pool.execute(
        "CREATE TABLE bench_messages_fk (" + _COLUMNS.format(fk=" REFERENCES users (id)") + ")"
    )
    await fk_pool.execute("CREATE INDEX ON bench_messages_fk (sender_id)")
    await plain_pool.execute("CREATE TABLE messages (" + _COLUMNS.format(fk="") + ")")
    await plain_pool.execute("CREATE INDEX ON messages (sender_id)")
    return fk_pool, plain_pool


async def _teardown(ctx: Context, fk_pool: asyncpg.Pool, plain_pool: asyncpg.Pool) -> None:
    await fk_pool.execute("DROP TABLE IF EXISTS bench_messages_fk")
    await fk_pool.close()
    await plain_pool.close()
    admin = await asyncpg.connect(ctx.db.server.url)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{MESSAGING_DB}" WITH (FORCE)')
    finally:
        await admin.close()


def _client(ctx: Context) -> AuthClient:
    return AuthClient(
        ctx.srv.target,
        token=ctx.srv.read_token,
        timeout=2.0,
        cache=CacheConfig(max_size=1_000_000, positive_ttl=3600, negative_ttl=3600),
    )


async def run(ctx: Context) -> Section:
    o = ctx.options
    section = Section("inserts", "Inserts referencing users: FK vs `require_user`")
    hot = [uuid.UUID(i) for i in ctx.take("active", HOT_USERS)]
    # Cold runs need one new sender per insert: one slice of the sample per round,
    # used by both the FK run and the validated run (a fresh client each time).
    per_round = (ctx.remaining("active") - LEAVE_FOR_OTHERS) // o.rounds
    fk_pool, plain_pool = await _setup(ctx)

    async def fk_insert(sender: uuid.UUID) -> None:
        await fk_pool.execute(
            "INSERT INTO bench_messages_fk (sender_id, body) VALUES ($1, $2)", sender, "hello"
        )

    def validated(client: AuthClient) -> Callable[[uuid.UUID], Awaitable[None]]:
        async def insert(sender: uuid.UUID) -> None:
            await client.require_user(sender)
            await plain_pool.execute(
                "INSERT INTO messages (sender_id, body) VALUES ($1, $2)", sender, "hello"
            )

        return insert

    async def plain_insert(sender: uuid.UUID) -> None:
        await plain_pool.execute(
            "INSERT INTO messages (sender_id, body) VALUES ($1, $2)", sender, "hello"
        )

    results: dict[str, list[Outcome]] = {
        k: [] for k in ("fk_hot", "warm", "plain", "fk_cold", "cold")
    }
    rpcs_cold: list[float] = []
    try:
        async with _client(ctx) as warm_client:
            await warm_client.users_exist(hot)  # warm the cache
            warm_insert = validated(warm_client)
            # Warm-up of every path (pools, prepared statements), not recorded.
            for insert in (fk_insert, warm_insert, plain_insert):
                await _drive(_hot(hot, 0), insert, o.warmup)

            async def cold_run(fresh: list[uuid.UUID]) -> Outcome:
                async with _client(ctx) as cold_client:
                    outcome = await _drive(iter(fresh), validated(cold_client), o.duration)
                rpcs_cold.append(cold_client.stats().rpcs / max(1, outcome.inserts))
                return outcome

            hot_paths = {"fk_hot": fk_insert, "warm": warm_insert, "plain": plain_insert}

            async def one(name: str, seed: int, fresh: list[uuid.UUID]) -> Outcome:
                if name in hot_paths:
                    return await _drive(_hot(hot, seed), hot_paths[name], o.duration)
                if name == "fk_cold":
                    return await _drive(iter(fresh), fk_insert, o.duration)
                return await cold_run(fresh)

            names = list(results)
            for index in range(o.rounds):
                fresh = [uuid.UUID(i) for i in ctx.take("active", per_round)]
                # Rotate the order each round, so drift does not favour one path.
                shift = index % len(names)
                for name in names[shift:] + names[:shift]:
                    results[name].append(await one(name, index + 1, fresh))
    finally:
        await _teardown(ctx, fk_pool, plain_pool)

    def rate(key: str) -> float:
        return median([r.per_s for r in results[key]])

    fk_hot, warm, fk_cold, cold = rate("fk_hot"), rate("warm"), rate("fk_cold"), rate("cold")
    plain = rate("plain")
    section.row(
        "validated inserts, warm cache",
        f"{fmt_int(warm)} rows/s",
        f"FK-checked {fmt_int(fk_hot)} rows/s (same senders)",
        warm / fk_hot,
        ">= 1.0",
        warm >= fk_hot,
    )
    section.row(
        "validated inserts, cold cache (every sender new)",
        f"{fmt_int(cold)} rows/s",
        f"FK-checked {fmt_int(fk_cold)} rows/s (same kind of senders)",
        cold / fk_cold,
    )
    section.row(
        "unchecked inserts (no FK, no lookup)",
        f"{fmt_int(plain)} rows/s",
        f"FK costs {1 - fk_hot / plain:.0%}, require_user (warm) {1 - warm / plain:.0%} of it",
    )
    section.figures.update(
        unchecked_rows_per_s=plain,
        fk_hot_rows_per_s=fk_hot,
        validated_warm_rows_per_s=warm,
        fk_cold_rows_per_s=fk_cold,
        validated_cold_rows_per_s=cold,
        warm_vs_fk=warm / fk_hot,
        cold_vs_fk=cold / fk_cold,
        cold_rpcs_per_insert=median(rpcs_cold),
    )
    errors = sum(r.errors for runs in results.values() for r in runs)
    exhausted = [k for k, runs in results.items() if any(r.exhausted for r in runs)]
    section.notes += [
        (
            f"{WRITERS} concurrent writers in this Python process (uvloop), asyncpg pools of "
            f"{POOL_SIZE} connections, one autocommit INSERT per row; PostgreSQL runs with "
            "fsync=off (embedded test settings), so commits are cheap and the checks weigh more."
        ),
        (
            f"Warm: senders drawn at random from {HOT_USERS:,} users, all cached by the client "
            "beforehand. Cold: each insert has a sender never seen before (fresh client per run); "
            f"the client sent {median(rpcs_cold):.3f} RPCs per cold insert (it merges concurrent "
            "misses into BatchUserExists)."
        ),
        f"{o.rounds} round(s) of the five runs (order rotated each round), {o.duration:g} s each (medians); "
        f"{errors} failed inserts"
        + (f"; senders ran out early in: {', '.join(exhausted)}" if exhausted else "")
        + ".",
        "The FK only checks that the row exists; `require_user` also rejects soft-deleted users.",
    ]
    return section
