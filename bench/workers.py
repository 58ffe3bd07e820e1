"""`auth-service serve --workers N` (N processes on one port, SO_REUSEPORT) vs one
process: UserExists requests/s, server CPU per request, memory."""

from __future__ import annotations

import os

from bench.calls import USER_EXISTS, check_active, spec, user_exists_bodies, zipf_sequence
from bench.context import Context
from bench.load import LoadSpec
from bench.measure import Measured, error_note, measure
from bench.report import Section, fmt_int, median
from bench.server import ServerProcess

MIB = 1024 * 1024
# More connections than usual: the kernel spreads connections, not calls, across
# the workers, so a few connections can land unevenly.
CONNECTIONS = 4
STREAMS = 8


async def run(ctx: Context) -> Section:
    o = ctx.options
    count = max(2, os.cpu_count() or 2)
    section = Section("workers", f"{count} server processes on one port vs 1")
    if not ctx.features.workers:
        section.row(
            "N server processes on one port", "not available yet", "`serve` has no --workers"
        )
        return section
    population = ctx.take("active", min(20_000, ctx.remaining("active")))
    bodies = user_exists_bodies(zipf_sequence(population, 100_000, seed=15))
    async with (
        ServerProcess(ctx.db.url, ctx.features) as single,
        ServerProcess(ctx.db.url, ctx.features, workers=count) as multi,
    ):
        for server in (single, multi):
            await check_active(server, population[:5])

        def load(server: ServerProcess, **kw: object) -> LoadSpec:
            return spec(
                ctx, server, USER_EXISTS, bodies, connections=CONNECTIONS, streams=STREAMS, **kw
            )

        for server in (single, multi):
            await ctx.generator.run(load(server, duration=o.warmup))
        one: list[Measured] = []
        many: list[Measured] = []
        for _ in range(o.rounds):
            one.append(await measure(ctx.generator, load(single), single))
            many.append(await measure(ctx.generator, load(multi), multi))
        rss_single, rss_multi = single.rss_bytes(), multi.rss_bytes()
    rps_one, rps_many = median([r.rps for r in one]), median([r.rps for r in many])
    cpu_one, cpu_many = median([r.cpu_us() for r in one]), median([r.cpu_us() for r in many])
    section.row(
        f"UserExists, `serve --workers {count}`",
        f"{fmt_int(rps_many)} req/s",
        f"1 process {fmt_int(rps_one)} req/s",
        rps_many / rps_one,
    )
    section.row(
        f"server CPU per UserExists, {count} workers",
        f"{cpu_many:.0f} µs",
        f"1 process {cpu_one:.0f} µs",
        cpu_many / cpu_one,
    )
    section.row(
        f"server RSS after the runs, {count} workers (all processes)",
        f"{rss_multi / MIB:.0f} MiB",
        f"1 process {rss_single / MIB:.0f} MiB",
    )
    section.figures.update(
        workers=count,
        workers_rps=rps_many,
        single_rps=rps_one,
        workers_vs_single=rps_many / rps_one,
        workers_cpu_us=cpu_many,
        single_cpu_us=cpu_one,
        workers_rss_mib=rss_multi / MIB,
    )
    section.notes += [
        (
            f"Both servers run at once on the same database; skewed ids (Zipf-like over "
            f"{len(population):,} users); {o.rounds} alternating round(s) of "
            f"{o.duration:g} s (medians), {o.processes} {ctx.generator.name} processes x "
            f"{CONNECTIONS} connections x {STREAMS} streams. On a {os.cpu_count()}-core machine "
            "the workers share the cores with the load generator and PostgreSQL, so N processes cannot "
            "reach N times one."
        ),
        error_note([*one, *many], ctx.generator.error_method),
    ]
    return section
