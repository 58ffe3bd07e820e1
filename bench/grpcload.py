"""`grpcload` (bench/grpcload.c): the load generator for calls whose request body
changes from call to call (h2load sends one body per process). Compiled on first
use with the machine's C compiler into bench/.build/; each generator process walks
its own part of the body sequence.

Its ceiling is reported with the serving figures: its CPU per Health/Check call
against the server's, and Health/Check driven by h2load in the same shape and the
same rounds (bench/serving.py).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import subprocess
import tempfile
from pathlib import Path

from bench.load import LoadResult, LoadSpec, grpc_frame

SOURCE = Path(__file__).resolve().parent / "grpcload.c"
BUILD = Path(__file__).resolve().parent / ".build"


class GrpcLoadError(RuntimeError):
    pass


def build() -> Path | None:
    """The compiled generator (built when the source changed); None without a C
    compiler."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        return None
    digest = hashlib.sha256(SOURCE.read_bytes()).hexdigest()[:12]
    binary = BUILD / f"grpcload-{digest}"
    if not binary.exists():
        BUILD.mkdir(exist_ok=True)
        result = subprocess.run(
            [compiler, "-O2", "-o", str(binary), str(SOURCE)],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise GrpcLoadError(f"cannot compile {SOURCE.name}:\n{result.stderr}")
    return binary


class GrpcLoad:
    name = "grpcload (bench/grpcload.c)"
    rate_method = "grpcload -r (an open-loop schedule; each call's latency from its scheduled time)"
    error_method = "answers without a message (grpcload), cross-checked with server metrics"
    caveat = ""

    def __init__(self, binary: Path) -> None:
        self.binary = binary

    async def run(self, spec: LoadSpec) -> LoadResult:
        host, port = spec.target.rsplit(":", 1)
        workers = spec.processes
        with tempfile.TemporaryDirectory(prefix="bench-grpcload-") as tmp:
            bodies = Path(tmp) / "bodies"
            bodies.write_bytes(b"".join(grpc_frame(b) for b in spec.bodies))
            procs = []
            for index in range(workers):
                cmd = [
                    str(self.binary),
                    host,
                    port,
                    spec.path,
                    str(bodies),
                    "-c",
                    str(spec.connections),
                    "-m",
                    str(spec.streams),
                    "-D",
                    f"{spec.duration:g}",
                    "-o",
                    str(len(spec.bodies) * index // workers),
                ]
                for name, value in spec.headers:
                    cmd += ["-H", f"{name}: {value}"]
                if spec.rate is not None:
                    cmd += ["-r", f"{spec.rate / workers:.3f}"]
                log_file = Path(tmp) / f"lat{index}" if spec.latencies else None
                if log_file is not None:
                    cmd += ["-l", str(log_file)]
                proc = await asyncio.create_subprocess_exec(
                    *cmd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
                )
                procs.append((proc, log_file))
            total = LoadResult()
            for proc, log_file in procs:
                out, err = await proc.communicate()
                if proc.returncode != 0:
                    raise GrpcLoadError(f"grpcload exited with {proc.returncode}: {err.decode()}")
                figures = json.loads(out)
                result = LoadResult(
                    done=figures["done"],
                    ok=figures["ok"],
                    failed=figures["failed"],
                    seconds=figures["seconds"],
                    rps=figures["rps"],
                )
                if log_file is not None:
                    result.latencies_us = [int(x) for x in log_file.read_text().split()]
                total.add(result)
            return total
