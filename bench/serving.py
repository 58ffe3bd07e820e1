"""UserExists against the gRPC floor of the same process (Health/Check), with
realistic ids: saturated requests/s, server CPU per request, latency from 10% to
100% of saturation (and a plot of it), memory.

Two kinds of UserExists load, each request body a different id (grpcload):
- skewed: ids drawn Zipf-like (p ~ 1/rank) from a large sample of the dataset's
  active users, as real traffic is (a few users are looked up often, most rarely),
  against a server as configured by default (its index of every user loaded);
- distinct: every call a different id never asked before, against a second server
  without that index (STATE_INDEX_MAX_USERS=0), so every lookup is a query: what a
  server pays while its index is not loaded (start-up, the feed down, a bulk change,
  a table over the limit). The first server answers these ids from memory too.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from bench import latency, plot, reasons
from bench.calls import (
    HEALTH,
    USER_EXISTS,
    Distinct,
    Stream,
    check_active,
    health_body,
    spec,
    user_exists_bodies,
    zipf_sequence,
)
from bench.context import Context
from bench.grpcload import GrpcLoad
from bench.load import H2Load, ensure_h2load
from bench.measure import Measured, measure
from bench.report import Section, fmt_int, median
from bench.server import NO_INDEX, ServerProcess
from bench.serving_notes import notes

MIB = 1024 * 1024
CURVE = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
TARGET_POINTS = (0.1, 0.5)  # issue 14's latency goals
SKEWED_CALLS = 1_000_000  # length of the skewed stream, sent in order over all runs
MAX_RATE = 10_000.0  # calls/s a saturated run may send before its window cycles


def _h2load_reference(ctx: Context) -> H2Load | None:
    """h2load, to compare grpcload with, when this run uses grpcload and h2load is
    on the machine (never installed for this)."""
    if not isinstance(ctx.generator, GrpcLoad):
        return None
    binary = ensure_h2load(install=False)
    return H2Load(binary) if binary else None


def _ms(us: float) -> str:
    return f"{us / 1000:.2f}"


async def run(ctx: Context) -> Section:
    async with ServerProcess(ctx.db.url, ctx.features, env=NO_INDEX) as query:
        return await _run(ctx, query)


async def _run(ctx: Context, query: ServerProcess) -> Section:
    """`query`: the server without an index, for the every-id-new loads."""
    o, srv = ctx.options, ctx.srv
    section = Section("serving", "UserExists vs the gRPC floor (one server process)")
    pg_pid = ctx.db.postmaster_pid()
    health = [await health_body(srv)]
    population = ctx.take("active", min(200_000, ctx.remaining("active") // 4))
    skewed_ids = zipf_sequence(population, SKEWED_CALLS)
    await check_active(srv, population[:20])
    skewed = Stream(user_exists_bodies(skewed_ids))
    distinct = Distinct(ctx, runs=o.rounds + 2)

    # Warm-up: connections, prepared statements, the server's state cache.
    await ctx.generator.run(spec(ctx, srv, HEALTH, health, duration=o.warmup))
    warm = skewed.take(int(MAX_RATE * o.warmup))
    await ctx.generator.run(spec(ctx, srv, USER_EXISTS, warm, duration=o.warmup))
    await ctx.generator.run(spec(ctx, query, USER_EXISTS, warm, duration=o.warmup))

    h_runs: list[Measured] = []
    u_runs: list[Measured] = []
    d_runs: list[Measured] = []
    # The generator's own ceiling: its CPU per call, and Health/Check driven by
    # h2load (one body per process) in the same shape, when this run uses grpcload.
    h2 = _h2load_reference(ctx)
    h2_runs: list[Measured] = []
    for _ in range(o.rounds):
        h_runs.append(await measure(ctx.generator, spec(ctx, srv, HEALTH, health), srv, pg_pid))
        if h2 is not None:
            h2_runs.append(await measure(h2, spec(ctx, srv, HEALTH, health), srv, pg_pid))
        window = skewed.take(int(MAX_RATE * o.duration))
        u_runs.append(
            await measure(ctx.generator, spec(ctx, srv, USER_EXISTS, window), srv, pg_pid)
        )
        fresh = distinct.bodies(int(MAX_RATE * o.duration))
        d_runs.append(
            await measure(ctx.generator, spec(ctx, query, USER_EXISTS, fresh), query, pg_pid)
        )
    ue_rps = median([r.rps for r in u_runs])
    h_rps = median([r.rps for r in h_runs])
    d_rps = median([r.rps for r in d_runs])
    ratio = ue_rps / h_rps
    rounds = list(zip(u_runs, h_runs, strict=True))  # (UserExists, Health/Check) each
    ue_cpu = median([r.cpu_us() for r in u_runs])
    d_cpu = median([r.cpu_us() for r in d_runs])
    h_cpu = median([r.cpu_us() for r in h_runs])
    pg_cpu = median([r.pg_cpu_us() or 0.0 for r in u_runs])
    pg_cpu_d = median([r.pg_cpu_us() or 0.0 for r in d_runs])
    section.row(
        "UserExists (skewed ids), saturated",
        f"{fmt_int(ue_rps)} req/s",
        f"Health/Check {fmt_int(h_rps)} req/s",
        ratio,
        ">= 0.85",
        ratio >= 0.85,
    ).why = reasons.saturated(ue_cpu, h_cpu, pg_cpu, rounds)
    section.row(  # how far one round lands from the ratio of medians (History 10)
        "the same ratio in each round (steal during UserExists / Health/Check)",
        reasons.per_round(rounds),
        "",
    )
    section.row(
        "UserExists (every id new, no index: a query each), saturated",
        f"{fmt_int(d_rps)} req/s",
        f"Health/Check {fmt_int(h_rps)} req/s",
        d_rps / h_rps,
    )
    section.row(
        "server CPU per UserExists, skewed / every id new",
        f"{ue_cpu:.0f} / {d_cpu:.0f} µs",
        f"per Health/Check {h_cpu:.0f} µs",
        ue_cpu / h_cpu,
    )
    gen_cpu = median([r.generator_cpu_us() for r in h_runs])
    section.row(
        f"load generator CPU per Health/Check, {ctx.generator.name.split()[0]}",
        f"{gen_cpu:.0f} µs",
        f"server {h_cpu:.0f} µs",
        gen_cpu / h_cpu,
    )
    if h2_runs:
        h2_rps = median([r.rps for r in h2_runs])
        h2_cpu = median([r.generator_cpu_us() for r in h2_runs])
        section.row(
            "Health/Check, saturated, driven by h2load instead",
            f"{fmt_int(h2_rps)} req/s ({h2_cpu:.0f} µs of h2load CPU per call)",
            f"{ctx.generator.name.split()[0]} {fmt_int(h_rps)} req/s",
            h_rps / h2_rps,
        )
        section.figures.update(health_rps_h2load=h2_rps, h2load_cpu_us_per_call=h2_cpu)
    section.figures.update(generator_cpu_us_per_health=gen_cpu)
    section.row(
        "PostgreSQL CPU per UserExists, skewed / every id new",
        f"{pg_cpu:.0f} / {pg_cpu_d:.0f} µs",
        "(all backends)",
    )

    # Latency against load, at the same offered rates for both methods: fractions
    # of the slower one's saturated rate. At the target points (10%, 50%) the loads
    # take turns in short slices and their latencies are pooled (bench/latency.py):
    # steal time here comes in bursts that one 5 s run of one load would take alone.
    basis = min(ue_rps, h_rps)
    point_duration = max(o.duration / 2, 2.0)
    slices = latency.slices_for(o.rounds * point_duration)  # at 10% and 50%
    curve_slices = latency.slices_for(point_duration)  # elsewhere on the curve
    curve = await _latency_curve(
        ctx,
        section,
        (srv, query),
        (health, skewed, distinct),
        basis,
        (slices, curve_slices),
        cold_cpu=(d_cpu, pg_cpu_d, d_rps),
        health_cpu=(h_cpu, h_rps),
    )
    picture = plot.latency_curve(curve, basis)
    if picture is not None:
        section.row("latency against load (p50, p99)", f"[{picture.name}]({picture.name})", "")

    section.row(
        "server RSS idle",
        f"{ctx.idle_rss / MIB:.0f} MiB",
        "after start (index of every user loaded), before any call",
    )
    peak = max(r.rss_max for r in u_runs)
    section.row(
        "server RSS under load (peak)", f"{peak / MIB:.0f} MiB", "skewed runs, sampled every 0.25 s"
    )
    section.figures.update(
        user_exists_rps=ue_rps,
        user_exists_distinct_rps=d_rps,
        health_rps=h_rps,
        user_exists_vs_health=ratio,
        cpu_us_per_user_exists=ue_cpu,
        cpu_us_per_user_exists_distinct=d_cpu,
        cpu_us_per_health=h_cpu,
        pg_cpu_us_per_user_exists=pg_cpu,
        rss_idle_mib=ctx.idle_rss / MIB,
        rss_load_mib=peak / MIB,
    )
    section.notes += notes(
        ctx,
        skewed_ids=skewed_ids,
        population=len(population),
        skewed=skewed,
        distinct=distinct,
        slices_at=(slices, curve_slices),
        saturated_calls=int(MAX_RATE * o.duration),
        runs=[*h_runs, *u_runs, *d_runs],
    )
    return section


async def _latency_curve(
    ctx: Context,
    section: Section,
    servers: tuple[ServerProcess, ServerProcess],
    calls: tuple[list[bytes], Stream, Distinct],
    basis: float,
    slices_at: tuple[int, int],
    *,
    cold_cpu: tuple[float, float, float],
    health_cpu: tuple[float, float],
) -> dict[str, list[tuple[float, float, float]]]:
    """p50 and p99 of UserExists and Health/Check at fractions of `basis`, with the
    target points' rows in `section`. `servers`: the one with the index and the one
    without (every-id-new loads); `calls`: Health/Check's body, the skewed stream and
    the every-id-new source; `slices_at`: the slices at target points and elsewhere."""
    srv, query = servers
    health, skewed, distinct = calls
    slices, curve_slices = slices_at
    points = CURVE if not ctx.options.quick else (0.1, 0.5, 1.0)
    curve: dict[str, list[tuple[float, float, float]]] = {"UserExists": [], "Health/Check": []}

    def load(
        path: str, bodies: Callable[[float], list[bytes]], rate: float, to: ServerProcess = srv
    ) -> latency.Slice:
        async def run_slice(seconds: float) -> list[int]:
            shape = spec(
                ctx, to, path, bodies(seconds), rate=rate, latencies=True, duration=seconds
            )
            return (await measure(ctx.generator, shape, to)).load.latencies_us

        return run_slice

    def stream_bodies(rate: float) -> Callable[[float], list[bytes]]:
        # the next stretch of the skewed stream, enough for a slice at `rate`
        return lambda seconds: skewed.take(int(rate * seconds * 1.2) + 100)

    def fresh_bodies(rate: float) -> Callable[[float], list[bytes]]:
        # ids never asked before, enough for a slice at `rate`
        return lambda seconds: distinct.bodies(int(rate * seconds * 1.2) + 100)

    for fraction in points:
        rate = basis * fraction
        targets = fraction in TARGET_POINTS
        loads = {
            "UserExists": load(USER_EXISTS, stream_bodies(rate), rate),
            "Health/Check": load(HEALTH, lambda _s: health, rate),
        }
        if targets:
            loads["cold"] = load(USER_EXISTS, fresh_bodies(rate), rate, query)
        pooled = await latency.alternate(
            loads,
            slices if targets else curve_slices,
            # UserExists lookups that went to the database (not answered from memory),
            # on either server: one load runs at a time
            _lookups(srv, query) if targets else None,
        )
        for name, points_of in curve.items():
            points_of.append((rate, pooled[name].p(50), pooled[name].p(99)))
        if not targets:
            continue
        _target_rows(
            section,
            fraction,
            rate,
            pooled,
            cold_cpu=cold_cpu,
            health_cpu=health_cpu,
        )
    return curve


def _target_rows(
    section: Section,
    fraction: float,
    rate: float,
    pooled: Mapping[str, latency.Pooled],
    *,
    cold_cpu: tuple[float, float, float],
    health_cpu: tuple[float, float],
) -> None:
    """The rows and figures of one target point (10%, 50%): the skewed and the
    every-id-new latencies against Health/Check's at the same rate."""
    u, h, c = pooled["UserExists"], pooled["Health/Check"], pooled["cold"]
    u50, u99, h50, h99, c50, c99 = u.p(50), u.p(99), h.p(50), h.p(99), c.p(50), c.p(99)
    steal = (
        f"; steal {u.steal_share:.0%} / {h.steal_share:.0%} / {c.steal_share:.0%} "
        "of the cores during the skewed / Health / every-id-new slices"
    )
    section.row(
        f"UserExists (skewed) p50 / p99 at {fmt_int(rate)} req/s ({fraction:.0%} of saturation)",
        f"{u50:.2f} / {u99:.2f} ms",
        f"Health/Check at the same rate: {h50:.2f} / {h99:.2f} ms" + steal,
        None,
        "p50 <= +0.3 ms, p99 <= +1 ms",
        u50 <= h50 + 0.3 and u99 <= h99 + 1.0,
    ).why = reasons.skewed_latency(u, h, c)
    section.row(
        f"UserExists (every id new, no index) p50 / p99 at {fraction:.0%} of saturation",
        f"{c50:.2f} / {c99:.2f} ms",
        f"Health/Check at the same rate: {h50:.2f} / {h99:.2f} ms",
        None,
        "p50 <= +1 ms",
        c50 <= h50 + 1.0,
    ).why = reasons.cold_latency(rate, c, h, cold_cpu=cold_cpu, health_cpu=health_cpu)
    pct = int(fraction * 100)
    section.figures.update(
        {
            f"latency_{pct}_p50_ms": u50,
            f"latency_{pct}_p99_ms": u99,
            f"health_latency_{pct}_p50_ms": h50,
            f"health_latency_{pct}_p99_ms": h99,
            f"cold_latency_{pct}_p50_ms": c50,
            f"cold_latency_{pct}_p99_ms": c99,
            f"steal_{pct}_user_exists": u.steal_share,
            f"steal_{pct}_health": h.steal_share,
            f"steal_{pct}_cold": c.steal_share,
        }
    )


def _lookups(*servers: ServerProcess) -> Callable[[], float | None]:
    """auth_lookup_lookups_total summed over `servers` (None without metrics)."""

    def total() -> float | None:
        counts = [server.total("auth_lookup_lookups_total") for server in servers]
        return None if None in counts else sum(c for c in counts if c is not None)

    return total
