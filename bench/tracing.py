"""What tracing costs: UserExists (skewed ids) on `auth-service serve` with tracing
off, on (every call sampled and exported over OTLP/HTTP to a local receiver), and on
with 1% of the calls sampled; saturated requests/s and server CPU per call. Then
auth_client's cache hit in a process without and with an SDK installed.

Off is the default (no OTEL_* variables): the server's hot path then only tests
`tracing.TRACER is None`, so "off" is the untraced server.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap

from bench.calls import USER_EXISTS, check_active, spec, user_exists_bodies, zipf_sequence
from bench.context import Context
from bench.measure import Measured, error_note, measure
from bench.otlp_sink import OtlpSink
from bench.report import Section, fmt_int, median
from bench.server import ServerProcess

# name -> the server's environment
VARIANTS: dict[str, dict[str, str]] = {
    "off": {},
    "on": {},  # + the receiver's endpoint
    "on, 1% sampled": {
        "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
        "OTEL_TRACES_SAMPLER_ARG": "0.01",
    },
}

# The cache-hit path of AuthClient.user_exists, timed in a fresh process: first
# without a tracer provider (the library's state when the application does not
# trace), then with the SDK installed (a span per lookup, exported nowhere).
_CLIENT_HITS = textwrap.dedent(
    """
    import asyncio, sys, time, uuid
    from auth_client import AuthClient

    async def hits(auth, key, n):
        started = time.perf_counter()
        for _ in range(n):
            await auth.user_exists(key)
        return (time.perf_counter() - started) / n * 1e9

    async def main():
        async with AuthClient(sys.argv[1], token=sys.argv[2]) as auth:
            key = uuid.uuid4()
            await auth.user_exists(key)  # cached from now on ("does not exist")
            off = min([await hits(auth, key, 200_000) for _ in range(3)])
            from opentelemetry import trace
            from opentelemetry.sdk.trace import TracerProvider
            trace.set_tracer_provider(TracerProvider())
            await auth.user_exists(uuid.uuid4())  # a miss notices the provider
            on = min([await hits(auth, key, 20_000) for _ in range(3)])
        print(f"{off:.0f} {on:.0f}")

    asyncio.run(main())
    """
)


def client_hit_ns(target: str, token: str) -> tuple[float, float]:
    out = subprocess.run(
        [sys.executable, "-c", _CLIENT_HITS, target, token],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    off, on = out.stdout.split()
    return float(off), float(on)


async def run(ctx: Context) -> Section:
    o = ctx.options
    section = Section("tracing", "Tracing off and on (one server process, skewed ids)")
    population = ctx.take("active", min(50_000, ctx.remaining("active") // 4))
    bodies = user_exists_bodies(zipf_sequence(population, 200_000, seed=16))
    runs: dict[str, list[Measured]] = {name: [] for name in VARIANTS}
    spans_per_call: dict[str, float] = {}
    with OtlpSink(keep=False) as sink:
        servers = {
            name: ServerProcess(
                ctx.db.url,
                ctx.features,
                env={**env, "OTEL_EXPORTER_OTLP_ENDPOINT": sink.endpoint} if name != "off" else {},
            )
            for name, env in VARIANTS.items()
        }
        for server in servers.values():
            await server.start()
        try:
            for server in servers.values():
                await check_active(server, population[:5])
                await ctx.generator.run(spec(ctx, server, USER_EXISTS, bodies, duration=o.warmup))
            for _ in range(o.rounds):
                for name, server in servers.items():
                    before = sink.count
                    runs[name].append(
                        await measure(ctx.generator, spec(ctx, server, USER_EXISTS, bodies), server)
                    )
                    await asyncio.sleep(1.0)  # the batch processor's last export
                    spans_per_call[name] = (sink.count - before) / max(1, runs[name][-1].load.done)
            hit_off, hit_on = await asyncio.to_thread(
                client_hit_ns, servers["off"].target, servers["off"].read_token
            )
        finally:
            for server in servers.values():
                await server.stop()
    rps = {name: median([r.rps for r in rs]) for name, rs in runs.items()}
    cpu = {name: median([r.cpu_us() for r in rs]) for name, rs in runs.items()}
    for name in VARIANTS:
        if name == "off":
            section.row("UserExists, tracing off", f"{fmt_int(rps[name])} req/s", "")
            section.row("server CPU per UserExists, tracing off", f"{cpu[name]:.0f} µs", "")
            continue
        section.row(
            f"UserExists, tracing {name}",
            f"{fmt_int(rps[name])} req/s",
            f"off {fmt_int(rps['off'])} req/s",
            rps[name] / rps["off"],
        )
        section.row(
            f"server CPU per UserExists, tracing {name}",
            f"{cpu[name]:.0f} µs (+{cpu[name] - cpu['off']:.0f} µs per call)",
            f"off {cpu['off']:.0f} µs",
            cpu[name] / cpu["off"],
        )
        section.row(
            f"spans exported per call, tracing {name}", f"{spans_per_call.get(name, 0):.2f}", ""
        )
    section.row(
        "auth_client cache hit, no tracer provider / SDK installed",
        f"{hit_off:.0f} / {hit_on:.0f} ns",
        "a span per lookup when tracing",
    )
    section.figures.update(
        tracing_off_rps=rps["off"],
        tracing_on_rps=rps["on"],
        tracing_sampled_1pct_rps=rps["on, 1% sampled"],
        tracing_off_cpu_us=cpu["off"],
        tracing_on_cpu_us=cpu["on"],
        tracing_sampled_1pct_cpu_us=cpu["on, 1% sampled"],
        tracing_on_cost_us=cpu["on"] - cpu["off"],
        client_hit_ns_untraced=hit_off,
        client_hit_ns_traced=hit_on,
    )
    gen = ctx.generator
    in_flight = o.processes * o.connections * o.streams
    section.notes += [
        (
            f"Load: {gen.name}, {in_flight} calls in flight, {o.rounds} round(s) of "
            f"{o.duration:g} s per variant (medians), {len(population):,} active users drawn "
            "Zipf-like (most calls answered by the server's state cache: one server span, "
            "no query span). On: OTEL_EXPORTER_OTLP_ENDPOINT pointing at an OTLP/HTTP "
            "receiver in the benchmark process (bench/otlp_sink.py, decoding every span), "
            "the SDK's default batch processor; calls carry no traceparent, so the server's "
            "sampler decides (parentbased_always_on: all; parentbased_traceidratio 0.01: 1%)."
        ),
        "CPU: utime+stime of the server process over the run, divided by completed calls.",
        error_note([r for rs in runs.values() for r in rs], gen.error_method),
    ]
    return section
