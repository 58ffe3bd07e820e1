"""The benchmark runner: `python -m bench [--quick] [--only NAME ...]`.

Starts embedded PostgreSQL with the users dataset, `auth-service serve`
subprocesses and load generators, runs the benchmarks in one go, prints the table
and (for a full run of everything) rewrites the generated part of bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import shlex
import subprocess
import sys
import time
import traceback
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

from bench import external, grpcload, machine, report
from bench.context import Context, Options
from bench.dataset import Dataset
from bench.load import Generator, H2Load, PythonLoad, ensure_h2load, h2load_version
from bench.server import Features, ServerProcess

# Benchmarks in the order they run: those in _NEEDS_SERVER need the dataset and server;
# those in _OWN_PROCESSES start their own (bench/<name>: `run(ctx) -> Section`; the
# relay-vs-Debezium comparison needs Java and Maven, and says so in one line without
# them); the others are bench_client / bench_relay (external.py).
NAMES = (
    "serving",
    "batch",
    "inserts",
    "workers",
    "tracing",
    "client",
    "relay",
    "replicas",
    "client_replica",
    "debezium",
)
_NEEDS_SERVER = {"serving", "batch", "inserts", "workers", "tracing"}
_OWN_PROCESSES = {"debezium"}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark auth-service against real processes; see bench/RESULTS.md.",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="100k users, 3 s runs, one round: to try the harness out (figures are rough)",
    )
    parser.add_argument(
        "--only",
        action="append",
        metavar="NAME",
        help=f"run only these benchmarks (repeat or comma-separate): {', '.join(NAMES)}",
    )
    parser.add_argument("--users", type=int, help="dataset size (default 1,000,000; quick 100,000)")
    parser.add_argument("--duration", type=float, help="seconds per measured run (default 10)")
    parser.add_argument(
        "--processes",
        type=int,
        help="load-generator processes (default 4)",
    )
    parser.add_argument(
        "--connections", type=int, help="HTTP/2 connections per generator process (default 2)"
    )
    parser.add_argument("--streams", type=int, help="calls in flight per connection (default 16)")
    parser.add_argument(
        "--load-generator",
        choices=["auto", "grpcload", "h2load", "python"],
        default="auto",
        help="auto: grpcload (bench/grpcload.c, compiled here; it varies the request per "
        "call), else h2load (installed with apt-get when missing and running as root), "
        "else Python processes",
    )
    parser.add_argument(
        "--write",
        action="store_true",
        help="rewrite bench/RESULTS.md even for a --quick or --only run",
    )
    parser.add_argument("--no-write", action="store_true", help="never rewrite bench/RESULTS.md")
    parser.add_argument("--json", metavar="PATH", help="also write every figure as JSON here")
    return parser.parse_args(argv)


def _options(args: argparse.Namespace) -> Options:
    return Options.make(
        quick=args.quick,
        users=args.users,
        duration=args.duration,
        processes=args.processes,
        connections=args.connections,
        streams=args.streams,
    )


def _code_version() -> str:
    """The commit measured, and whether the server's code had uncommitted changes."""
    root = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str:
        out = subprocess.run(
            ["git", *args], cwd=root, capture_output=True, text=True, check=False, timeout=30
        )
        return out.stdout.strip()

    commit = git("rev-parse", "--short", "HEAD")
    if not commit:
        return "unknown (not a git checkout)"
    dirty = git("status", "--porcelain", "--", "auth_service", "clients", "migrations")
    return commit + (" + uncommitted changes to the service/client" if dirty else "")


def _selected(only: list[str] | None) -> list[str]:
    if not only:
        return list(NAMES)
    wanted = {name.strip() for item in only for name in item.split(",") if name.strip()}
    unknown = wanted - set(NAMES)
    if unknown:
        raise SystemExit(f"unknown benchmark(s): {', '.join(sorted(unknown))}; known: {NAMES}")
    return [name for name in NAMES if name in wanted]


def _generator(choice: str) -> Generator:
    if choice in {"auto", "grpcload"}:
        built = grpcload.build()
        if built is not None:
            return grpcload.GrpcLoad(built)
        if choice == "grpcload":
            raise SystemExit("grpcload needs a C compiler (cc or gcc)")
        print("  no C compiler for grpcload: trying h2load", flush=True)
    if choice != "python":
        binary = ensure_h2load(install=True)
        if binary:
            return H2Load(binary)
        if choice == "h2load":
            raise SystemExit("h2load not found (apt-get install nghttp2-client)")
        print("  h2load not available: using Python load-generator processes", flush=True)
    return PythonLoad()


def _failed(name: str, exc: BaseException) -> report.Section:
    section = report.Section(name, f"{name} (FAILED)")
    detail = " ".join(str(exc).split())
    section.row("benchmark failed", type(exc).__name__, detail[:100])
    section.notes.append(f"{name} raised {type(exc).__name__}: {detail}"[:500])
    return section


async def _guarded(name: str, step: Callable[[], Awaitable[report.Section]]) -> report.Section:
    print(f"- {name} ...", flush=True)
    started = time.perf_counter()
    try:
        section = await step()
    except Exception as exc:
        traceback.print_exc()
        section = _failed(name, exc)
    print(f"  {name} done in {time.perf_counter() - started:.0f}s", flush=True)
    return section


def _module_step(ctx: Context, name: str) -> Callable[[], Awaitable[report.Section]]:
    module = importlib.import_module(f"bench.{name}")

    async def step() -> report.Section:
        section: report.Section = await module.run(ctx)
        return section

    return step


async def _server_benchmarks(
    ctx: Context, names: list[str], extra: dict[str, str]
) -> list[report.Section]:
    o = ctx.options
    sections = []
    async with Dataset(o.users) as dataset:
        ctx.dataset = dataset
        extra["PostgreSQL"] = f"{dataset.server_version} (embedded; fsync=off)"
        loaded = (
            "reused from bench/.data"
            if dataset.load_seconds is None
            else f"loaded in {dataset.load_seconds:.0f} s by this run"
        )
        extra["dataset"] = f"{o.users:,} users, 5% soft-deleted, {loaded}"
        active = min(int(o.users * 0.6), 600_000)
        ctx.sample = await dataset.sample(active=active, deleted=max(200, o.processes * 60))
        async with ServerProcess(dataset.url, ctx.features) as server:
            ctx.server = server
            await asyncio.sleep(0.5)
            ctx.idle_rss = server.rss_bytes()
            sections.extend(
                [
                    await _guarded(name, _module_step(ctx, name))
                    for name in names
                    if name != "workers"
                ]
            )
        ctx.server = None
        if "workers" in names:
            sections.append(await _guarded("workers", _module_step(ctx, "workers")))
    ctx.dataset = None
    return sections


async def _self_contained(name: str) -> report.Section:
    """bench_client / bench_relay: modules owned by other engineers with `run()`."""
    return await _guarded(name, lambda: external.run(name))


async def run(
    args: argparse.Namespace,
) -> tuple[list[report.Section], dict[str, str], machine.Busy, str]:
    names = _selected(args.only)
    options = _options(args)
    if machine.autogroup_enabled():
        print(f"  warning: {machine.AUTOGROUP_CAVEAT}", flush=True)
    busy = machine.Busy()
    started = datetime.now(UTC)
    generator = _generator(args.load_generator)
    features = Features()
    extra = {
        "load generator": h2load_version(generator.binary)
        if isinstance(generator, H2Load)
        else generator.name,
        "code": _code_version(),
        "auth-service serve": "--workers "
        + ("yes" if features.workers else "no")
        + ", metrics "
        + ("yes" if features.metrics else "no"),
    }
    ctx = Context(options=options, generator=generator, features=features)
    sections: list[report.Section] = []
    server_names = [n for n in names if n in _NEEDS_SERVER]
    if server_names:
        sections += await _server_benchmarks(ctx, server_names, extra)
    for name in names:
        if name in _OWN_PROCESSES:
            sections.append(await _guarded(name, _module_step(ctx, name)))
        elif name not in _NEEDS_SERVER:
            sections.append(await _self_contained(name))
    busy.finish()
    extra["started"] = started.strftime("%Y-%m-%d %H:%M UTC")
    caveats = [generator.caveat, machine.AUTOGROUP_CAVEAT if machine.autogroup_enabled() else ""]
    return sections, extra, busy, " ".join(c for c in caveats if c)


def _interpreter() -> str:
    """sys.executable relative to the repository root when it lives there (.venv)."""
    root = Path(__file__).resolve().parent.parent
    try:
        return str(Path(sys.executable).absolute().relative_to(root))
    except ValueError:
        return "python"


def _header(info: dict[str, str], busy: machine.Busy, options: Options) -> str:
    command = shlex.join([_interpreter(), "-m", "bench", *sys.argv[1:]])
    mode = "quick" if options.quick else "full"
    lines = [
        (
            f"Command: `{command}` ({mode} run: {options.users:,} users, "
            f"{options.duration:g} s runs, {options.rounds} round(s))."
        ),
        "",
        "Machine: " + "; ".join(f"{k} {v}" for k, v in info.items()) + ".",
        "",
        f"Machine load while measuring: {busy.describe()}.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        import uvloop  # noqa: PLC0415
    except ImportError:  # pragma: no cover
        sections, extra, busy, caveat = asyncio.run(run(args))
    else:
        sections, extra, busy, caveat = uvloop.run(run(args))
    options = _options(args)
    info = machine.describe(extra)
    header = _header(info, busy, options) + (f"\n\n**{caveat}**" if caveat else "")
    block = report.generated_block(header, sections)
    print()
    print(block)
    complete = not args.quick and not args.only
    if not args.no_write and (complete or args.write):
        report.write_results(block)
        print(f"\nwrote {report.RESULTS}")
    elif not args.no_write:
        print("\nbench/RESULTS.md not rewritten (quick or partial run; --write to force)")
    if args.json:
        figures = {s.name: s.figures for s in sections}
        Path(args.json).write_text(json.dumps({"machine": info, "figures": figures}, indent=2))
    return 0 if all("FAILED" not in s.title for s in sections) else 1
