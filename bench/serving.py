"""UserExists against the gRPC floor of the same process (Health/Check): saturated
requests/s, server CPU per request, latency at half of saturation, memory."""

from __future__ import annotations

from grpc_health.v1 import health_pb2

from auth_client.contract import auth_pb2
from bench.context import Context
from bench.load import LoadSpec
from bench.measure import Measured, call_raw, error_note, measure
from bench.report import Section, fmt_int, median, percentile
from bench.server import ServerProcess

USER_EXISTS = "/auth.v1.AuthService/UserExists"
HEALTH = "/grpc.health.v1.Health/Check"
MIB = 1024 * 1024


async def user_exists_bodies(
    server: ServerProcess, ids: list[str]
) -> tuple[list[bytes], list[int]]:
    """Requests for `ids` (all active), each checked with one real call first."""
    bodies, sizes = [], []
    expected = auth_pb2.UserExistsResponse(exists=True, state=auth_pb2.USER_STATE_ACTIVE)
    for user_id in ids:
        body = auth_pb2.UserExistsRequest(user_id=user_id).SerializeToString()
        reply = await call_raw(server.target, USER_EXISTS, body, server.metadata)
        if auth_pb2.UserExistsResponse.FromString(reply) != expected:
            raise RuntimeError(f"UserExists({user_id}) answered {reply!r}, expected active")
        bodies.append(body)
        sizes.append(len(reply))
    return bodies, sizes


async def health_bodies(server: ServerProcess, count: int) -> tuple[list[bytes], list[int]]:
    body = health_pb2.HealthCheckRequest().SerializeToString()
    reply = await call_raw(server.target, HEALTH, body, server.metadata)
    if health_pb2.HealthCheckResponse.FromString(reply).status != 1:
        raise RuntimeError("Health/Check is not SERVING")
    return [body] * count, [len(reply)] * count


def spec(
    ctx: Context,
    server: ServerProcess,
    path: str,
    bodies: tuple[list[bytes], list[int]],
    **kw: object,
) -> LoadSpec:
    """A load of `bodies` on `path` of `server`, shaped by the options unless `kw` says."""
    o = ctx.options
    values: dict[str, object] = {
        "target": server.target,
        "path": path,
        "bodies": bodies[0],
        "response_sizes": bodies[1],
        "headers": server.metadata,
        "connections": o.connections,
        "streams": o.streams,
        "duration": o.duration,
    }
    values.update(kw)
    return LoadSpec(**values)  # type: ignore[arg-type]


def _ms(us: float) -> str:
    return f"{us / 1000:.2f}"


async def run(ctx: Context) -> Section:
    o, srv = ctx.options, ctx.srv
    section = Section("serving", "UserExists vs the gRPC floor (one server process)")
    pg_pid = ctx.db.postmaster_pid()
    health = await health_bodies(srv, o.processes)
    rounds = [
        await user_exists_bodies(srv, ctx.take("active", o.processes)) for _ in range(o.rounds + 1)
    ]
    # Warm-up: connections, prepared statements, caches.
    for path, bodies in ((HEALTH, health), (USER_EXISTS, rounds[-1])):
        await ctx.generator.run(spec(ctx, srv, path, bodies, duration=o.warmup))

    h_runs: list[Measured] = []
    u_runs: list[Measured] = []
    for index in range(o.rounds):
        h_runs.append(await measure(ctx.generator, spec(ctx, srv, HEALTH, health), srv, pg_pid))
        u_runs.append(
            await measure(ctx.generator, spec(ctx, srv, USER_EXISTS, rounds[index]), srv, pg_pid)
        )
    ue_rps = median([r.rps for r in u_runs])
    h_rps = median([r.rps for r in h_runs])
    ratio = ue_rps / h_rps
    section.row(
        "UserExists, saturated",
        f"{fmt_int(ue_rps)} req/s",
        f"Health/Check {fmt_int(h_rps)} req/s",
        ratio,
        ">= 0.9",
        ratio >= 0.9,
    )
    ue_cpu = median([r.cpu_us() for r in u_runs])
    h_cpu = median([r.cpu_us() for r in h_runs])
    section.row(
        "server CPU per UserExists",
        f"{ue_cpu:.0f} µs",
        f"per Health/Check {h_cpu:.0f} µs",
        ue_cpu / h_cpu,
    )
    pg_cpu = median([r.pg_cpu_us() or 0.0 for r in u_runs])
    section.row("PostgreSQL CPU per UserExists", f"{pg_cpu:.0f} µs", "(all backends)")

    # Latency at a fixed rate: half of the saturation just measured.
    rate = ue_rps / 2
    lat_u = await measure(
        ctx.generator,
        spec(ctx, srv, USER_EXISTS, rounds[-1], rate=rate, latencies=True),
        srv,
    )
    lat_h = await measure(
        ctx.generator, spec(ctx, srv, HEALTH, health, rate=rate, latencies=True), srv
    )
    u_lat, h_lat = lat_u.load.latencies_us, lat_h.load.latencies_us
    section.row(
        f"UserExists latency p50 / p99 at {fmt_int(rate)} req/s (50% of saturation)",
        f"{_ms(percentile(u_lat, 50))} / {_ms(percentile(u_lat, 99))} ms",
        "Health/Check at the same rate: "
        f"{_ms(percentile(h_lat, 50))} / {_ms(percentile(h_lat, 99))} ms",
    )
    section.row("server RSS idle", f"{ctx.idle_rss / MIB:.0f} MiB", "after start, before any call")
    peak = max(r.rss_max for r in [*u_runs, lat_u])
    section.row("server RSS under load (peak)", f"{peak / MIB:.0f} MiB", "sampled every 0.25 s")
    section.figures.update(
        user_exists_rps=ue_rps,
        health_rps=h_rps,
        user_exists_vs_health=ratio,
        cpu_us_per_user_exists=ue_cpu,
        cpu_us_per_health=h_cpu,
        pg_cpu_us_per_user_exists=pg_cpu,
        latency_rate=rate,
        latency_p50_ms=percentile(u_lat, 50) / 1000,
        latency_p99_ms=percentile(u_lat, 99) / 1000,
        health_latency_p50_ms=percentile(h_lat, 50) / 1000,
        health_latency_p99_ms=percentile(h_lat, 99) / 1000,
        rss_idle_mib=ctx.idle_rss / MIB,
        rss_load_mib=peak / MIB,
        achieved_latency_rate=lat_u.rps,
    )
    spec0 = spec(ctx, srv, USER_EXISTS, rounds[0])
    gen = ctx.generator
    section.notes += [
        (
            f"Load: {gen.name}, {spec0.processes} processes x {o.connections} connections x "
            f"{o.streams} streams = {spec0.in_flight} calls in flight; {o.rounds} alternating "
            f"round(s) of {o.duration:g} s each for UserExists and Health/Check (medians), "
            f"after a {o.warmup:g} s warm-up."
        ),
        (
            f"UserExists ids: {o.processes} distinct active ids per run (the load generator "
            f"sends one request body per process), {o.processes * (o.rounds + 1)} in all, "
            f"drawn at random from {o.users:,} users."
        ),
        (
            "CPU: utime+stime of the server process tree (and of the PostgreSQL postmaster tree) "
            "over the run, divided by completed calls."
        ),
        (
            f"Latency: a fixed total rate of {fmt_int(rate)} req/s (achieved "
            f"{fmt_int(lat_u.rps)}): {ctx.generator.rate_method}."
        ),
        error_note([*h_runs, *u_runs, lat_u, lat_h], ctx.generator.error_method),
    ]
    return section
