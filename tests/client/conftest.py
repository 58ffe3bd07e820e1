"""Fixtures for the client library tests: users seeded in the real database, an
interceptor that counts the RPCs a client sends, and `auth-service serve` as a
subprocess that tests can kill and restart on the same port."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import uuid
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import asyncpg
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from auth_client import AuthClient
from auth_client.contract import auth_pb2
from auth_service.local.embedded import free_port
from tests.conftest import ADMIN_TOKEN

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

    from auth_service.api.server import AuthServer

REPO = Path(__file__).resolve().parents[2]


class CountingInterceptor(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    """Counts the RPCs a client sends, per method, and the size of each batch."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.batch_sizes: list[int] = []
        self.metadata: list[tuple[tuple[str, str], ...]] = []

    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        method = details.method.decode() if isinstance(details.method, bytes) else details.method
        self.calls[method.rsplit("/", 1)[-1]] += 1
        self.metadata.append(tuple(details.metadata or ()))
        if isinstance(request, auth_pb2.BatchUserExistsRequest):
            self.batch_sizes.append(len(request.user_ids))
        return await continuation(details, request)

    @property
    def total(self) -> int:
        return sum(self.calls.values())


async def seed_users(
    database_url: str, active: int, deleted: int = 0
) -> tuple[list[uuid.UUID], list[uuid.UUID]]:
    """Insert users straight into the auth database (much faster than CreateUser
    for thousands of rows). Returns (active ids, soft-deleted ids)."""
    ids = [uuid.uuid4() for _ in range(active + deleted)]
    conn = await asyncpg.connect(database_url)
    try:
        await conn.executemany(
            "INSERT INTO users (id, username, display_name, deleted_at) "
            "VALUES ($1, $2, $2, CASE WHEN $3 THEN now() END)",
            [(uid, f"u_{uid.hex[:16]}", index >= active) for index, uid in enumerate(ids)],
        )
    finally:
        await conn.close()
    return ids[:active], ids[active:]


@pytest.fixture
def counter() -> CountingInterceptor:
    return CountingInterceptor()


@pytest.fixture
async def make_client(
    server: AuthServer, counter: CountingInterceptor
) -> AsyncIterator[Callable[..., Awaitable[AuthClient]]]:
    """Factory: an open AuthClient to the `server` fixture whose RPCs `counter`
    counts; closed at teardown."""
    clients: list[AuthClient] = []

    async def make(**options: Any) -> AuthClient:
        options.setdefault("interceptors", [counter])
        options.setdefault("timeout", 5.0)
        client = AuthClient(server.address, **options)
        await client.start()
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.aclose()


class ServeProcess:
    """`auth-service serve` in a subprocess on a fixed port: kill it, restart it."""

    def __init__(self, database_url: str, port: int | None = None) -> None:
        self.port = port or free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "GRPC_LISTEN": self.address,
            "ADMIN_TOKENS": ADMIN_TOKEN,
            "LOG_LEVEL": "WARNING",
            "SHUTDOWN_GRACE_S": "0",
            "HEALTH_CHECK_INTERVAL_S": "0.2",
            "RELAY_ENABLED": "false",  # no broker needed for these tests
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 - closed in close()

    async def start(self, timeout: float = 30.0) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "auth_service", "serve"],
            env=self.env,
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=self.log,
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        async with grpc.aio.insecure_channel(self.address) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            while True:
                if self.proc.poll() is not None:
                    self.log.seek(0)
                    err = self.log.read().decode(errors="replace")[-2000:]
                    pytest.fail(f"auth-service serve exited with {self.proc.returncode}: {err}")
                with contextlib.suppress(grpc.aio.AioRpcError):
                    reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=1)
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                if loop.time() > deadline:
                    pytest.fail("auth-service serve did not become healthy")
                await asyncio.sleep(0.1)

    def signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def kill(self) -> None:
        """SIGKILL, as a crashed node: no goodbye on open connections."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
            self.proc.wait(10)
        self.log.close()


@pytest.fixture
async def serve_process(database_url: str) -> AsyncIterator[ServeProcess]:
    process = ServeProcess(database_url)
    try:
        await process.start()
        yield process
    finally:
        process.close()
