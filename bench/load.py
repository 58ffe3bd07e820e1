"""Load generation: gRPC unary calls from h2load (nghttp2-client), or from Python
processes when h2load is not available.

h2load sends one request body per process, so a load with several distinct request
messages (e.g. different user ids) runs one h2load process per message, all at
once. h2load counts every HTTP 200 as a success, even one whose `grpc-status` is
an error; an error answer carries no DATA, so comparing the DATA bytes h2load
received with (successes x size of the expected answer) counts gRPC errors exactly
when every answer of a process has the same size, which it has here (one message
per process).
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol


def grpc_frame(message: bytes) -> bytes:
    """A gRPC length-prefixed message: flag 0 (uncompressed), 4-byte big-endian
    length, the serialized message."""
    return b"\x00" + struct.pack(">I", len(message)) + message


@dataclass(frozen=True)
class LoadSpec:
    """One load run against one gRPC method."""

    target: str  # host:port
    path: str  # /package.Service/Method
    bodies: list[bytes]  # serialized requests; generator process i sends bodies[i]
    response_sizes: list[int]  # serialized size of the expected answer to each body
    headers: tuple[tuple[str, str], ...] = ()
    connections: int = 2  # per process
    streams: int = 16  # in flight per connection
    duration: float = 10.0
    rate: float | None = None  # total requests/s; None = as fast as the server answers
    latencies: bool = False
    # grpcload: generator processes sharing the `bodies` sequence (each call takes
    # the next body). h2load and the Python generator: one process per body.
    workers: int | None = None

    @property
    def processes(self) -> int:
        return self.workers or len(self.bodies)

    @property
    def in_flight(self) -> int:
        return self.processes * self.connections * self.streams


@dataclass
class LoadResult:
    done: int = 0  # requests completed (any status)
    ok: int = 0  # answered with grpc-status OK
    failed: int = 0  # transport failures, non-200, gRPC errors
    seconds: float = 0.0
    rps: float = 0.0  # completed requests/s, summed over the processes
    latencies_us: list[int] = field(default_factory=list)

    def add(self, other: LoadResult) -> None:
        self.done += other.done
        self.ok += other.ok
        self.failed += other.failed
        self.seconds = max(self.seconds, other.seconds)
        self.rps += other.rps
        self.latencies_us.extend(other.latencies_us)


def ensure_h2load(*, install: bool) -> str | None:
    """Path of h2load; installs Debian's nghttp2-client when allowed and possible."""
    found = shutil.which("h2load")
    if found or not install:
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return None
    print("  h2load missing: apt-get install -y nghttp2-client", flush=True)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in (
        ["apt-get", "update", "-qq"],
        ["apt-get", "install", "-y", "-qq", "nghttp2-client"],
    ):
        if subprocess.run(cmd, env=env, capture_output=True, check=False).returncode != 0:
            return None
    return shutil.which("h2load")


def h2load_version(binary: str) -> str:
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False)
    return out.stdout.strip() or "unknown"


_FINISHED = re.compile(r"finished in ([\d.]+)(m?s), ([\d.]+) req/s")
_REQUESTS = re.compile(
    r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
    r"(\d+) errored, (\d+) timeout"
)
_DATA = re.compile(r"traffic: .*?, [^,]*? \((\d+)\) data")


class H2LoadError(RuntimeError):
    pass


def parse_h2load(output: str, response_size: int) -> LoadResult:
    """Figures of one h2load run; gRPC errors counted from the DATA bytes."""
    finished = _FINISHED.search(output)
    requests = _REQUESTS.search(output)
    data = _DATA.search(output)
    if not (finished and requests and data):
        raise H2LoadError(f"cannot parse h2load output:\n{output[-2000:]}")
    seconds = float(finished.group(1)) / (1000 if finished.group(2) == "ms" else 1)
    done, succeeded = int(requests.group(3)), int(requests.group(4))
    # Each OK answer carries exactly response_size + 5 bytes of DATA; errors none.
    ok = min(succeeded, int(data.group(1)) // (response_size + 5))
    return LoadResult(
        done=done, ok=ok, failed=done - ok, seconds=seconds, rps=float(finished.group(3))
    )


def _latencies(log_file: Path) -> list[int]:
    out = []
    for line in log_file.read_text().splitlines():
        fields = line.split("\t")
        if len(fields) >= 3 and fields[1] == "200":
            out.append(int(fields[2]))
    return out


class H2Load:
    name = "h2load"
    rate_method = "h2load --rps (a fixed rate per connection), per-call times from --log-file"
    error_method = "counted from the DATA bytes h2load received"
    caveat = ""

    def __init__(self, binary: str) -> None:
        self.binary = binary

    def _command(self, spec: LoadSpec, body: Path, log_file: Path | None) -> list[str]:
        cmd = [
            self.binary,
            "-D",
            f"{max(1, round(spec.duration * 1000))}ms",
            "-c",
            str(spec.connections),
            "-m",
            str(spec.streams),
            "-t",
            "1",
            "-d",
            str(body),
            "-H",
            "content-type: application/grpc",
            "-H",
            "te: trailers",
        ]
        for name, value in spec.headers:
            cmd += ["-H", f"{name}: {value}"]
        if spec.rate is not None:
            per_client = spec.rate / (spec.processes * spec.connections)
            cmd += ["--rps", f"{max(per_client, 0.1):.2f}"]
        if log_file is not None:
            cmd += ["--log-file", str(log_file)]
        return [*cmd, f"http://{spec.target}{spec.path}"]

    async def run(self, spec: LoadSpec) -> LoadResult:
        with tempfile.TemporaryDirectory(prefix="bench-h2load-") as tmp:
            procs = []
            for index, message in enumerate(spec.bodies):
                body = Path(tmp) / f"body{index}"
                body.write_bytes(grpc_frame(message))
                log_file = Path(tmp) / f"log{index}" if spec.latencies else None
                proc = await asyncio.create_subprocess_exec(
                    *self._command(spec, body, log_file),
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.STDOUT,
                )
                procs.append((proc, log_file))
            total = LoadResult()
            for (proc, log_file), size in zip(procs, spec.response_sizes, strict=True):
                out, _ = await proc.communicate()
                text = out.decode(errors="replace")
                if proc.returncode != 0:
                    raise H2LoadError(f"h2load exited with {proc.returncode}:\n{text[-2000:]}")
                result = parse_h2load(text, size)
                if log_file is not None:
                    result.latencies_us = _latencies(log_file)
                total.add(result)
            return total


class PythonLoad:
    """Fallback: `python -m bench.pyload` processes (grpc.aio). Far slower than
    h2load: it may be the bottleneck, and the report says so."""

    name = "python (grpc.aio processes; h2load not available)"
    rate_method = "an open-loop schedule in each generator process"
    error_method = "gRPC status of each answer"
    caveat = (
        "The Python load generator manages ~3k calls/s per process and may be the "
        "bottleneck: install h2load (nghttp2-client) for real figures."
    )

    async def run(self, spec: LoadSpec) -> LoadResult:
        from bench import pyload  # noqa: PLC0415 - pyload imports this module

        procs = []
        for message in spec.bodies:
            args = pyload.encode_args(spec, message)
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "bench.pyload",
                args,
                stdout=asyncio.subprocess.PIPE,
                cwd=str(Path(__file__).resolve().parent.parent),
            )
            procs.append(proc)
        total = LoadResult()
        for proc in procs:
            out, _ = await proc.communicate()
            if proc.returncode != 0:
                raise H2LoadError(f"bench.pyload exited with {proc.returncode}")
            total.add(pyload.decode_result(out))
        return total


class Generator(Protocol):
    """A load generator: h2load, grpcload (bench/grpcload.py) or Python processes."""

    name: str
    rate_method: str
    error_method: str
    caveat: str

    async def run(self, spec: LoadSpec) -> LoadResult: ...
