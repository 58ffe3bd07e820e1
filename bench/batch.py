"""BatchUserExists of 1000 ids through the server vs the same query sent straight
to PostgreSQL with asyncpg (`= ANY($1::uuid[])`, prepared), on the same database.

The server measured here has its state cache and its index of every user off
(STATE_CACHE_SIZE=0, STATE_INDEX_MAX_USERS=0): every id is looked up in
PostgreSQL, the same work the raw reference does. Requests ask for
the packed answer (`states_only`), as auth_client does."""

from __future__ import annotations

import asyncio
import random
import time
import uuid

import asyncpg

from auth_client.contract import auth_pb2
from bench import reasons
from bench.calls import spec
from bench.context import Context
from bench.measure import Measured, call_raw, error_note, measure
from bench.report import Section, fmt_int, median
from bench.server import NO_INDEX, ServerProcess

BATCH = "/auth.v1.AuthService/BatchUserExists"
SIZE = 1000
DELETED_PER_BATCH = 50  # 5%, as in the table
RAW_CONNECTIONS = 4
RAW_QUERY = "SELECT id, deleted_at IS NULL FROM users WHERE id = ANY($1::uuid[])"


async def _bodies(
    server: ServerProcess, batches: list[list[str]], deleted: set[str]
) -> tuple[list[bytes], list[int]]:
    bodies, sizes = [], []
    for ids in batches:
        body = auth_pb2.BatchUserExistsRequest(user_ids=ids, states_only=True).SerializeToString()
        reply = auth_pb2.BatchUserExistsResponse.FromString(
            await call_raw(server.target, BATCH, body, server.metadata)
        )
        states = list(reply.states)
        expected = [
            auth_pb2.USER_STATE_DELETED if i in deleted else auth_pb2.USER_STATE_ACTIVE for i in ids
        ]
        if states != expected:
            raise RuntimeError("BatchUserExists answered differently from the database")
        bodies.append(body)
        sizes.append(reply.ByteSize())
    return bodies, sizes


async def raw_ids_per_s(url: str, batches: list[list[uuid.UUID]], duration: float) -> float:
    """ids/s of RAW_CONNECTIONS connections each sending the prepared query in a loop."""
    conns = [await asyncpg.connect(url) for _ in range(RAW_CONNECTIONS)]
    try:
        statements = [await c.prepare(RAW_QUERY) for c in conns]
        rows = 0
        end = time.perf_counter() + duration

        async def loop(index: int) -> None:
            nonlocal rows
            statement = statements[index]
            turn = index
            while time.perf_counter() < end:
                result = await statement.fetch(batches[turn % len(batches)])
                rows += len(result)
                turn += 1

        started = time.perf_counter()
        await asyncio.gather(*(loop(i) for i in range(RAW_CONNECTIONS)))
        return rows / (time.perf_counter() - started)
    finally:
        for conn in conns:
            await conn.close()


async def run(ctx: Context) -> Section:
    o = ctx.options
    section = Section("batch", f"BatchUserExists of {SIZE:,} ids vs raw asyncpg")
    rng = random.Random(8)
    deleted: set[str] = set()
    batches = []
    for _ in range(o.processes):
        dead = ctx.take("deleted", DELETED_PER_BATCH)
        ids = ctx.take("active", SIZE - DELETED_PER_BATCH) + dead
        rng.shuffle(ids)
        deleted.update(dead)
        batches.append(ids)
    uuids = [[uuid.UUID(i) for i in ids] for ids in batches]
    pg_pid = ctx.db.postmaster_pid()
    async with ServerProcess(
        ctx.db.url, ctx.features, env={**NO_INDEX, "STATE_CACHE_SIZE": "0"}
    ) as srv:
        bodies = await _bodies(srv, batches, deleted)
        load = spec(ctx, srv, BATCH, bodies[0], connections=1, streams=2, workers=2)
        await ctx.generator.run(
            spec(ctx, srv, BATCH, bodies[0], connections=1, streams=2, duration=o.warmup)
        )
        await raw_ids_per_s(ctx.db.url, uuids, o.warmup)

        served: list[Measured] = []
        raw: list[float] = []
        for _ in range(o.rounds):
            served.append(await measure(ctx.generator, load, srv, pg_pid))
            raw.append(await raw_ids_per_s(ctx.db.url, uuids, o.duration))
    server_ids = median([r.rps * SIZE for r in served])
    raw_ids = median(raw)
    ratio = server_ids / raw_ids
    cpu = median([r.cpu_us() for r in served])
    pg_cpu = median([r.pg_cpu_us() or 0.0 for r in served])
    section.row(
        f"BatchUserExists ({SIZE:,} ids), ids/s",
        f"{fmt_int(server_ids)} ids/s",
        f"raw asyncpg = ANY($1::uuid[]) {fmt_int(raw_ids)} ids/s",
        ratio,
        ">= 0.8",
        ratio >= 0.8,
    ).why = reasons.batch(cpu, pg_cpu)
    section.row(
        "BatchUserExists ids/s, absolute",
        f"{fmt_int(server_ids)} ids/s",
        "",
        None,
        ">= 200,000",
        server_ids >= 200_000,
    )
    section.row(
        f"server CPU per {SIZE:,}-id batch",
        f"{cpu:,.0f} µs",
        f"PostgreSQL {pg_cpu:,.0f} µs per batch",
    )
    section.figures.update(
        batch_ids_per_s=server_ids,
        raw_ids_per_s=raw_ids,
        batch_vs_raw=ratio,
        cpu_us_per_batch=cpu,
        pg_cpu_us_per_batch=pg_cpu,
    )
    section.notes += [
        (
            f"{len(batches)} distinct batches of {SIZE:,} ids ({DELETED_PER_BATCH} soft-deleted, "
            f"shuffled), cycled by {load.processes} {ctx.generator.name} process(es), "
            f"{load.in_flight} calls in flight, `states_only` answers, a server with its "
            "state cache off; each batch checked against the database with one real call first."
        ),
        (
            f"Raw reference: {RAW_CONNECTIONS} asyncpg connections in this Python process "
            "(uvloop), one prepared query each in a loop over the same batches."
        ),
        f"{o.rounds} alternating round(s) of {o.duration:g} s each (medians).",
        error_note(served, ctx.generator.error_method),
    ]
    return section
