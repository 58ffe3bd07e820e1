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

The writers run as services run them: in several processes (bench/insert_writer.py,
each with its own pool and AuthClient), all at once, for each figure.
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench import insert_writer, procstat, reasons
from bench.context import Context
from bench.report import Section, fmt_int, median

PROCESSES = 2  # writer processes per figure (services run several)
HOT_USERS = 1000
MESSAGING_DB = "bench_messaging"
LEAVE_FOR_OTHERS = 1000  # sampled ids left for the benchmarks after this one
KINDS = {
    "fk_hot": "fk",
    "warm": "validated",
    "plain": "plain",
    "fk_cold": "fk",
    "cold": "validated",
}

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
    rpcs: int
    writer_cpu_s: float  # all writer processes, while writing
    server_cpu_s: float  # auth-service serve, over the run
    pg_cpu_s: float  # every PostgreSQL backend, over the run

    def per_row_us(self, cpu_s: float) -> float:
        return cpu_s * 1e6 / max(1, self.inserts)

    def busy_share(self) -> float:
        """Writers, auth-service and PostgreSQL together, as a share of all cores."""
        cpu_s = self.writer_cpu_s + self.server_cpu_s + self.pg_cpu_s
        return procstat.share_of_cores(cpu_s, self.seconds)

    @property
    def per_s(self) -> float:
        return self.inserts / self.seconds if self.seconds else 0.0


async def _setup(ctx: Context) -> None:
    admin = await asyncpg.connect(ctx.db.server.url)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{MESSAGING_DB}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{MESSAGING_DB}"')
    finally:
        await admin.close()
    fk = await asyncpg.connect(ctx.db.url)
    plain = await asyncpg.connect(ctx.db.url_for(MESSAGING_DB))
    try:
        await fk.execute("DROP TABLE IF EXISTS bench_messages_fk")
        await fk.execute(
            "CREATE TABLE bench_messages_fk (" + _COLUMNS.format(fk=" REFERENCES users (id)") + ")"
        )
        await fk.execute("CREATE INDEX ON bench_messages_fk (sender_id)")
        await plain.execute("CREATE TABLE messages (" + _COLUMNS.format(fk="") + ")")
        await plain.execute("CREATE INDEX ON messages (sender_id)")
    finally:
        await fk.close()
        await plain.close()


async def _teardown(ctx: Context) -> None:
    admin = await asyncpg.connect(ctx.db.server.url)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{MESSAGING_DB}" WITH (FORCE)')
    finally:
        await admin.close()
    fk = await asyncpg.connect(ctx.db.url)
    try:
        await fk.execute("DROP TABLE IF EXISTS bench_messages_fk")
    finally:
        await fk.close()


async def _run(ctx: Context, name: str, ids: list[str], seed: int, seconds: float) -> Outcome:
    """One figure: PROCESSES writer processes at once; cold ids are split among them."""
    hot = name in {"fk_hot", "warm", "plain"}
    pg_pid = ctx.db.postmaster_pid()
    with tempfile.TemporaryDirectory(prefix="bench-inserts-") as tmp:
        procs = []
        for index in range(PROCESSES):
            mine = ids if hot else ids[index::PROCESSES]
            ids_file = Path(tmp) / f"ids{index}"
            ids_file.write_text("\n".join(mine))
            options: dict[str, Any] = {
                "kind": KINDS[name],
                "hot": hot,
                "ids_file": str(ids_file),
                "seed": seed * 100 + index,
                "seconds": seconds,
                "warmup": ctx.options.warmup,
                "fk_url": ctx.db.url,
                "plain_url": ctx.db.url_for(MESSAGING_DB),
                "target": ctx.srv.target,
                "token": ctx.srv.read_token,
            }
            procs.append(
                await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    "bench.insert_writer",
                    json.dumps(options),
                    stdout=asyncio.subprocess.PIPE,
                    cwd=str(Path(__file__).resolve().parent.parent),
                )
            )
        server_cpu, pg_cpu = ctx.srv.cpu_seconds(), procstat.tree_cpu_seconds(pg_pid)
        results = []
        for proc in procs:
            out, _ = await proc.communicate()
            if proc.returncode != 0:
                raise RuntimeError(f"bench.insert_writer exited with {proc.returncode}")
            results.append(json.loads(out))
    return Outcome(
        inserts=sum(r["inserts"] for r in results),
        errors=sum(r["errors"] for r in results),
        seconds=max(r["seconds"] for r in results),
        exhausted=any(r["exhausted"] for r in results),
        rpcs=sum(r["rpcs"] for r in results),
        writer_cpu_s=sum(r["cpu_seconds"] for r in results),
        server_cpu_s=ctx.srv.cpu_seconds() - server_cpu,
        pg_cpu_s=procstat.tree_cpu_seconds(pg_pid) - pg_cpu,
    )


async def _rpc_floor(ctx: Context, seconds: float = 2.0) -> tuple[float, float]:
    """CPU per Health/Check call with one call in flight (the rate of RPCs the cold
    runs send is of that order, far below saturation): (auth-service µs, caller µs)."""
    async with grpc.aio.insecure_channel(ctx.srv.target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        request = health_pb2.HealthCheckRequest()
        await stub.Check(request, timeout=5)
        calls, server, own = 0, ctx.srv.cpu_seconds(), time.process_time()
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            await stub.Check(request, timeout=5)
            calls += 1
        return (
            (ctx.srv.cpu_seconds() - server) * 1e6 / calls,
            (time.process_time() - own) * 1e6 / calls,
        )


async def run(ctx: Context) -> Section:
    o = ctx.options
    section = Section("inserts", "Inserts referencing users: FK vs `require_user`")
    hot = ctx.take("active", HOT_USERS)
    # Cold runs need one new sender per insert: one slice of the sample per round,
    # used by both the FK run and the validated run (a fresh client each time).
    per_round = (ctx.remaining("active") - LEAVE_FOR_OTHERS) // o.rounds
    await _setup(ctx)
    results: dict[str, list[Outcome]] = {name: [] for name in KINDS}
    try:
        for name in ("fk_hot", "warm", "plain"):  # warm-up of every path, not recorded
            await _run(ctx, name, hot, 0, o.warmup)
        names = list(results)
        for index in range(o.rounds):
            fresh = ctx.take("active", per_round)
            # Rotate the order each round, so drift does not favour one path.
            shift = index % len(names)
            for name in names[shift:] + names[:shift]:
                ids = hot if name in {"fk_hot", "warm", "plain"} else fresh
                results[name].append(await _run(ctx, name, ids, index + 1, o.duration))
        floor_server, floor_client = await _rpc_floor(ctx)
    finally:
        await _teardown(ctx)

    def rate(key: str) -> float:
        return median([r.per_s for r in results[key]])

    fk_hot, warm, fk_cold, cold = rate("fk_hot"), rate("warm"), rate("fk_cold"), rate("cold")
    plain = rate("plain")
    rpcs_cold = median([r.rpcs / max(1, r.inserts) for r in results["cold"]])

    def cpu(key: str) -> tuple[float, float, float]:
        runs = results[key]
        return (
            median([r.per_row_us(r.writer_cpu_s) for r in runs]),
            median([r.per_row_us(r.server_cpu_s) for r in runs]),
            median([r.per_row_us(r.pg_cpu_s) for r in runs]),
        )

    cpu_rows = {key: cpu(key) for key in KINDS}
    section.row(
        "validated inserts, warm cache",
        f"{fmt_int(warm)} rows/s",
        f"FK-checked {fmt_int(fk_hot)} rows/s (same senders)",
        warm / fk_hot,
        ">= 1.0",
        warm >= fk_hot,
    ).why = reasons.warm_inserts(sum(cpu_rows["warm"]), sum(cpu_rows["fk_hot"]))
    section.row(
        "validated inserts, cold cache (every sender new)",
        f"{fmt_int(cold)} rows/s",
        f"FK-checked {fmt_int(fk_cold)} rows/s (same kind of senders)",
        cold / fk_cold,
        ">= 0.8",
        cold >= 0.8 * fk_cold,
    ).why = reasons.cold_inserts(
        busy=median([r.busy_share() for r in results["cold"]]),
        fk_us=sum(cpu_rows["fk_cold"]),
        validated_us=sum(cpu_rows["cold"]),
        plain_us=sum(cpu_rows["plain"]),
        floor_us=(floor_server, floor_client),
        rpcs_per_row=rpcs_cold,
    )
    section.row(
        "unchecked inserts (no FK, no lookup)",
        f"{fmt_int(plain)} rows/s",
        f"FK costs {1 - fk_hot / plain:.0%}, require_user (warm) {1 - warm / plain:.0%} of it",
    )
    for key, label in (("fk_cold", "FK-checked, cold"), ("cold", "validated, cold")):
        writers, server, pg = cpu_rows[key]
        section.row(
            f"CPU per row, {label}",
            f"{writers + server + pg:,.0f} µs",
            f"writers {writers:,.0f}, auth-service {server:,.0f}, PostgreSQL {pg:,.0f} µs",
        )
    server_per_rpc = cpu_rows["cold"][1] / max(rpcs_cold, 1e-9)
    section.row(
        "auth-service CPU per cold-lookup RPC",
        f"{server_per_rpc:,.0f} µs",
        f"{1 / max(rpcs_cold, 1e-9):.1f} ids per RPC; a Health/Check at one call in flight "
        f"costs it {floor_server:,.0f} µs (and the calling process {floor_client:,.0f} µs)",
    )
    section.figures.update(
        unchecked_rows_per_s=plain,
        fk_hot_rows_per_s=fk_hot,
        validated_warm_rows_per_s=warm,
        fk_cold_rows_per_s=fk_cold,
        validated_cold_rows_per_s=cold,
        warm_vs_fk=warm / fk_hot,
        cold_vs_fk=cold / fk_cold,
        cold_rpcs_per_insert=rpcs_cold,
        server_cpu_us_per_cold_rpc=server_per_rpc,
        server_cpu_us_per_health_check_one_in_flight=floor_server,
        caller_cpu_us_per_health_check_one_in_flight=floor_client,
    )
    for key, (writers, server, pg) in cpu_rows.items():
        section.figures[f"{key}_cpu_us_per_row"] = writers + server + pg
    errors = sum(r.errors for runs in results.values() for r in runs)
    exhausted = [k for k, runs in results.items() if any(r.exhausted for r in runs)]
    section.notes += [
        (
            f"{PROCESSES} writer processes per figure, all at once (bench/insert_writer.py), "
            f"each with {insert_writer.WRITERS} concurrent writers (uvloop), an asyncpg pool of "
            f"{insert_writer.POOL_SIZE} connections and its own AuthClient; one autocommit INSERT "
            "per row; PostgreSQL runs with fsync=off (embedded test settings), so commits are "
            "cheap and the checks weigh more."
        ),
        (
            f"Warm: senders drawn at random from {HOT_USERS:,} users, all cached by each "
            "client beforehand. Cold: each insert has a sender never seen before (a fresh "
            f"client per run); the clients sent {rpcs_cold:.3f} RPCs per cold insert (they "
            "merge concurrent misses into BatchUserExists)."
        ),
        f"{o.rounds} round(s) of the five runs (order rotated each round), {o.duration:g} s "
        f"each (medians); {errors} failed inserts"
        + (f"; senders ran out early in: {', '.join(exhausted)}" if exhausted else "")
        + ".",
        "The FK only checks that the row exists; `require_user` also rejects soft-deleted users.",
    ]
    return section
