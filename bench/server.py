"""`auth-service serve` as a subprocess, driven the way an operator would run it:
configured by environment variables, one caller token with the read scope, the
relay off (the relay has its own benchmark).

Server-side error counting: when `serve` offers a metrics listener (checked in
`serve --help` / ENV_VARS at run time), `handled()` scrapes
`grpc_server_handled_total` by method and code; warnings and errors in the
server's log are counted either way.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Self

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from auth_service.config import ENV_VARS
from auth_service.local.embedded import free_port
from bench import procstat


def serve_command() -> list[str]:
    script = Path(sys.executable).parent / "auth-service"
    if script.is_file():
        return [str(script), "serve"]
    found = shutil.which("auth-service")
    return [found, "serve"] if found else [sys.executable, "-m", "auth_service", "serve"]


def serve_help() -> str:
    out = subprocess.run(
        [*serve_command(), "--help"], capture_output=True, text=True, check=False, timeout=60
    )
    return out.stdout + out.stderr


def _env_var_names() -> set[str]:
    return {var.name for var in ENV_VARS}


def _free_ports(count: int) -> int:
    """The first of `count` consecutive free loopback ports."""
    for _ in range(100):
        base = free_port()
        if base + count > 65535:
            continue
        try:
            for port in range(base, base + count):
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        return base
    raise RuntimeError(f"no {count} consecutive free ports")


# A server that answers every id with a query (or its state cache): no index of
# every user. What the every-id-new loads and BatchUserExists against raw asyncpg
# measure.
NO_INDEX = {"STATE_INDEX_MAX_USERS": "0"}


class Features:
    """What the installed `auth-service serve` offers (it is being extended)."""

    def __init__(self) -> None:
        text = serve_help()
        names = _env_var_names()
        self.workers = "--workers" in text
        self.metrics_flag = "--metrics-listen" in text
        self.metrics_env = "METRICS_LISTEN" in names
        self.index = "STATE_INDEX_MAX_USERS" in names

    @property
    def metrics(self) -> bool:
        return self.metrics_flag or self.metrics_env


class ServerProcess:
    """One `auth-service serve` (optionally `--workers N`) on a free loopback port."""

    def __init__(
        self,
        database_url: str,
        features: Features,
        *,
        workers: int | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.port = free_port()
        self.target = f"127.0.0.1:{self.port}"
        self.read_token = secrets.token_urlsafe(24)
        self.admin_token = secrets.token_urlsafe(24)
        self.workers = workers
        self._features = features
        # `--workers N` serves worker i's metrics on port + i.
        self.metrics_port = _free_ports(workers or 1) if features.metrics else None
        self._env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "GRPC_LISTEN": self.target,
            "ADMIN_TOKENS": self.admin_token,
            "AUTH_TOKENS": f"bench users:read {self.read_token}",
            "RELAY_ENABLED": "false",
            "LOG_LEVEL": "WARNING",
            "LOG_FORMAT": "text",
            # The load generators keep up to a few hundred calls in flight; the
            # admission limit is not what is measured here.
            "MAX_CONCURRENT_RPCS": "0",
            "SHUTDOWN_GRACE_S": "1",
            **(env or {}),
        }
        if self.metrics_port is not None and features.metrics_env and not features.metrics_flag:
            self._env["METRICS_LISTEN"] = f"127.0.0.1:{self.metrics_port}"
        self._dir = Path(tempfile.mkdtemp(prefix="bench-serve-"))
        self.log_path = self._dir / "serve.log"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def auth_header(self) -> tuple[str, str]:
        return ("authorization", f"Bearer {self.read_token}")

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (self.auth_header,)

    @property
    def pid(self) -> int:
        assert self._proc is not None, "server not started"
        return self._proc.pid

    def command(self) -> list[str]:
        cmd = serve_command()
        if self.workers is not None:
            cmd += ["--workers", str(self.workers)]
        if self.metrics_port is not None and self._features.metrics_flag:
            cmd += ["--metrics-listen", f"127.0.0.1:{self.metrics_port}"]
        return cmd

    async def start(self, timeout: float = 60.0) -> None:
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                self.command(), env=self._env, stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + timeout
        async with grpc.aio.insecure_channel(self.target) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while True:
                if self._proc.poll() is not None:
                    raise RuntimeError(f"auth-service serve exited:\n{self.log_tail()}")
                with contextlib.suppress(grpc.aio.AioRpcError):
                    reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                    if (
                        reply.status == health_pb2.HealthCheckResponse.SERVING
                        and await self._workers_ready()
                        and await asyncio.to_thread(self._index_ready)
                    ):
                        return
                if time.monotonic() > deadline:
                    raise RuntimeError(f"auth-service serve not SERVING:\n{self.log_tail()}")
                await asyncio.sleep(0.1)

    async def _workers_ready(self) -> bool:
        """With --workers: every worker process exists and (with metrics) answers."""
        if self.workers is None:
            return True
        if procstat.tree_size(self.pid) <= self.workers:
            return False
        if self.metrics_port is None:
            await asyncio.sleep(2)  # no way to ask each worker: give them time
            return True
        return await asyncio.to_thread(self.handled) is not None

    def _index_ready(self) -> bool:
        """The index of every user is loaded (in every worker), when the server
        has one: a run that starts before would measure the query path."""
        if not self._features.index or self._env.get("STATE_INDEX_MAX_USERS") == "0":
            return True
        loads = self.total("auth_state_index_loads_total")
        return loads is None or loads >= (self.workers or 1)

    def cpu_seconds(self) -> float:
        return procstat.tree_cpu_seconds(self.pid)

    def rss_bytes(self) -> int:
        return procstat.tree_rss_bytes(self.pid)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def log_problems(self) -> int:
        """Lines the server logged at WARNING or above (it runs with LOG_LEVEL=WARNING)."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return 0
        return sum(1 for line in text.splitlines() if "WARNING" in line or "ERROR" in line)

    def _samples(self, name: str) -> list[tuple[dict[str, str], float]] | None:
        """Every worker's samples called `name` (labels, value), or None without
        metrics or when a worker does not answer."""
        if self.metrics_port is None:
            return None
        out: list[tuple[dict[str, str], float]] = []
        for index in range(self.workers or 1):
            url = f"http://127.0.0.1:{self.metrics_port + index}/metrics"
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    text = response.read().decode()
            except OSError:
                return None
            out += [
                (sample.labels, sample.value)
                for family in text_string_to_metric_families(text)
                for sample in family.samples
                if sample.name == name
            ]
        return out

    def handled(self) -> dict[tuple[str, str], float] | None:
        """grpc_server_handled_total by (method, code), or None without metrics."""
        samples = self._samples("grpc_server_handled_total")
        if samples is None:
            return None
        out: dict[tuple[str, str], float] = {}
        for labels, value in samples:
            key = (labels.get("grpc_method", "?"), labels.get("grpc_code", "?"))
            out[key] = out.get(key, 0.0) + value
        return out

    def total(self, name: str) -> float | None:
        """One sample name summed over labels and workers (e.g.
        "auth_lookup_lookups_total"), or None without metrics."""
        samples = self._samples(name)
        return None if samples is None else sum(value for _, value in samples)

    async def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(proc.wait, 20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await asyncio.to_thread(proc.wait)
        shutil.rmtree(self._dir, ignore_errors=True)

    async def __aenter__(self) -> Self:
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
