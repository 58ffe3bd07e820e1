"""Run one load against a server and account for it on the server side: CPU time
of the server (and of PostgreSQL), peak RSS, gRPC errors from the server's
metrics when it has them, and warnings in its log."""

from __future__ import annotations

import asyncio
import contextlib
import resource
import time
from dataclasses import dataclass

import grpc

from bench import procstat
from bench.load import Generator, LoadResult, LoadSpec
from bench.server import ServerProcess


@dataclass
class Measured:
    load: LoadResult
    cpu_s: float
    pg_cpu_s: float | None
    rss_max: int
    server_codes: dict[str, int] | None  # non-OK codes counted by the server; None = no metrics
    log_problems: int
    # CPU of the load generator's processes (children reaped during the run).
    generator_cpu_s: float = 0.0
    # Steal time during the run, as a share of all cores (0..1).
    steal_share: float = 0.0

    @property
    def server_cores(self) -> float:
        """How many cores the server used on average over the run."""
        return self.cpu_s / self.load.seconds if self.load.seconds > 0 else 0.0

    @property
    def rps(self) -> float:
        return self.load.rps

    def cpu_us(self, per: float = 1.0) -> float:
        """Server CPU µs per request (or per `per` units of work per request)."""
        return self.cpu_s * 1e6 / max(1, self.load.done) / per

    def generator_cpu_us(self) -> float:
        """Load-generator CPU µs per request."""
        return self.generator_cpu_s * 1e6 / max(1, self.load.done)

    def pg_cpu_us(self) -> float | None:
        return None if self.pg_cpu_s is None else self.pg_cpu_s * 1e6 / max(1, self.load.done)


async def _sample_rss(pid_rss: ServerProcess, peak: list[int], stop: asyncio.Event) -> None:
    while not stop.is_set():
        with contextlib.suppress(Exception):
            peak[0] = max(peak[0], pid_rss.rss_bytes())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.25)


def _method(path: str) -> str:
    return path.rsplit("/", 1)[-1]


def _delta(
    before: dict[tuple[str, str], float] | None,
    after: dict[tuple[str, str], float] | None,
    method: str,
) -> dict[str, int] | None:
    """Non-OK answers of `method` between two scrapes, by status code."""
    if before is None or after is None:
        return None
    codes: dict[str, int] = {}
    for (name, code), value in after.items():
        diff = int(value - before.get((name, code), 0.0))
        if name == method and code != "OK" and diff:
            codes[code] = codes.get(code, 0) + diff
    return codes


async def measure(
    generator: Generator, spec: LoadSpec, server: ServerProcess, pg_pid: int | None = None
) -> Measured:
    metrics_before = server.handled()
    problems_before = server.log_problems()
    pg_before = procstat.tree_cpu_seconds(pg_pid) if pg_pid else None
    cpu_before = server.cpu_seconds()
    peak = [server.rss_bytes()]
    stop = asyncio.Event()
    sampler = asyncio.create_task(_sample_rss(server, peak, stop))
    children_before = _children_cpu_s()
    steal_before, started = procstat.machine_steal(), time.monotonic()
    try:
        result = await generator.run(spec)
    finally:
        stop.set()
        await sampler
    generator_cpu = _children_cpu_s() - children_before
    steal = procstat.share_of_cores(
        procstat.machine_steal() - steal_before, time.monotonic() - started
    )
    cpu = server.cpu_seconds() - cpu_before
    pg_cpu = (
        procstat.tree_cpu_seconds(pg_pid) - pg_before if pg_pid and pg_before is not None else None
    )
    codes = _delta(metrics_before, server.handled(), _method(spec.path))
    return Measured(
        load=result,
        cpu_s=cpu,
        pg_cpu_s=pg_cpu,
        rss_max=peak[0],
        server_codes=codes,
        log_problems=server.log_problems() - problems_before,
        generator_cpu_s=generator_cpu,
        steal_share=steal,
    )


def _children_cpu_s() -> float:
    """utime+stime of this process's reaped children: the generator processes run
    and are reaped inside `generator.run`; the servers are reaped only at the end."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


async def call_raw(
    target: str, path: str, message: bytes, metadata: tuple[tuple[str, str], ...]
) -> bytes:
    """One real gRPC call with a serialized request; the serialized answer."""
    async with grpc.aio.insecure_channel(target) as channel:
        call = channel.unary_unary(path, None, None)
        reply: bytes = await call(message, metadata=metadata, timeout=10)
        return reply


def error_note(runs: list[Measured], how: str) -> str:
    """One sentence on errors across runs: client-side (`how` they were counted)
    and server-side counts."""
    client = sum(r.load.failed for r in runs)
    done = sum(r.load.done for r in runs)
    problems = sum(r.log_problems for r in runs)
    text = f"Errors: {client:,} of {done:,} answers not OK ({how})"
    if all(r.server_codes is not None for r in runs):
        codes: dict[str, int] = {}
        for r in runs:
            for code, count in (r.server_codes or {}).items():
                codes[code] = codes.get(code, 0) + count
        listed = ", ".join(f"{code} {count:,}" for code, count in sorted(codes.items()))
        text += f"; the server's grpc_server_handled_total counted {sum(codes.values()):,} non-OK"
        text += f" ({listed})" if listed else ""
        if set(codes) <= {"Canceled", "CANCELLED"} and codes:
            text += " - calls still in flight when the load generator stopped"
    else:
        text += "; server metrics not available"
    return text + f"; {problems} warning/error lines in the server log."
