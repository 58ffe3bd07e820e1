"""Shared fixtures: real PostgreSQL, a real Kafka-protocol broker and a real gRPC
server on loopback, on free ports.

- PostgreSQL: one embedded server per session (or TEST_DATABASE_URL / DATABASE_URL);
  every test gets its own database cloned from a migrated template.
- Kafka: one embedded Tansu broker per session (or KAFKA_BOOTSTRAP_SERVERS); tests
  use uuid-named topics and groups.
- When an embedded binary is missing, tests that need it are skipped locally and
  fail when CI=true.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from typing import Any, NoReturn, TypeVar

import asyncpg
import grpc
import pytest

from auth_client.contract import admin_pb2_grpc, auth_pb2_grpc
from auth_service.api.server import AuthServer
from auth_service.config import Settings
from auth_service.local.apache_kafka import ApacheKafka
from auth_service.local.apache_kafka import missing as apache_kafka_missing
from auth_service.local.broker import EmbeddedKafka
from auth_service.local.embedded import EmbeddedError, EmbeddedPostgres
from auth_service.store.migrations import migrate
from tests.helpers import ADMIN_MD, ADMIN_TOKEN  # noqa: F401 - re-exported for fixtures

TEMPLATE_DB = "auth_test_template"
T = TypeVar("T")


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion from synchronous code (a fresh loop, own thread)."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


def _missing(what: str, exc: Exception) -> NoReturn:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{what} is required in CI: {exc}")
    pytest.skip(f"{what} not available: {exc}")


S = TypeVar("S", EmbeddedPostgres, EmbeddedKafka)


@contextlib.contextmanager
def embedded(kind: type[S]) -> Iterator[S]:
    """Start an embedded server of `kind`, yield it, close it. A missing binary
    skips the test locally and fails it in CI."""
    try:
        server = kind()
        server.start()
    except EmbeddedError as exc:
        _missing(kind.__name__, exc)
    try:
        yield server
    finally:
        server.close()


# What `auth-service dev` takes by default; a user may run it beside the suite.
DEV_DEFAULT_PORTS = (50051, 9092)


@pytest.fixture(scope="session", autouse=True)
def dev_default_ports_taken() -> Iterator[None]:
    """Hold dev's default ports for the whole run, as a user's `auth-service dev`
    would: a test or fixture that binds one of them (instead of a free port) fails
    here as it would on the user's machine. Ports already taken stay taken."""
    held = []
    for port in DEV_DEFAULT_PORTS:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.bind(("127.0.0.1", port))
            sock.listen()
        except OSError:
            sock.close()
            continue
        held.append(sock)
    yield
    for sock in held:
        sock.close()


@pytest.fixture(scope="session")
def pg_admin_url() -> Iterator[str]:
    """URL of a PostgreSQL server database we may CREATE DATABASE from."""
    external = os.environ.get("TEST_DATABASE_URL") or os.environ.get("DATABASE_URL")
    if external:
        yield external
        return
    with embedded(EmbeddedPostgres) as server:
        yield server.url


def _with_database(url: str, name: str) -> str:
    head, _, tail = url.rpartition("/")
    query = tail.partition("?")[2]
    return f"{head}/{name}" + (f"?{query}" if query else "")


async def _admin(url: str, *statements: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        for sql in statements:
            await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def template_url(pg_admin_url: str) -> str:
    """A migrated database that per-test databases are cloned from."""
    run_sync(
        _admin(
            pg_admin_url, f"DROP DATABASE IF EXISTS {TEMPLATE_DB}", f"CREATE DATABASE {TEMPLATE_DB}"
        )
    )
    url = _with_database(pg_admin_url, TEMPLATE_DB)
    migrate(url)
    return url


@pytest.fixture
def new_database(pg_admin_url: str, template_url: str) -> Iterator[Callable[[], str]]:
    """Factory: each call creates a fresh migrated database and returns its URL."""
    created: list[str] = []

    def make() -> str:
        name = f"t_{uuid.uuid4().hex[:20]}"
        run_sync(
            _admin(
                pg_admin_url, f"CREATE DATABASE {name} TEMPLATE {TEMPLATE_DB} STRATEGY FILE_COPY"
            )
        )
        created.append(name)
        return _with_database(pg_admin_url, name)

    yield make
    for name in created:
        run_sync(_admin(pg_admin_url, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))


@pytest.fixture
def database_url(new_database: Callable[[], str]) -> str:
    """A fresh, migrated, empty auth database for this test."""
    return new_database()


@pytest.fixture
def private_postgres(tmp_path: Any) -> Iterator[EmbeddedPostgres]:
    """A PostgreSQL server of this test's own, migrated, that the test may stop,
    kill and restart (fault tests)."""
    with embedded(EmbeddedPostgres) as server:
        migrate(server.url)
        yield server


def make_settings(database_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "listen": "127.0.0.1:0",
        "admin_tokens": (ADMIN_TOKEN,),
        "allow_unauthenticated_reads": True,
        "health_interval_s": 0.2,
        "shutdown_grace_s": 1.0,
        "connect_timeout_s": 2.0,
        "pool_min_size": 1,
        # Off: most tests are about the query path, and the index loads in the
        # background; tests/test_user_index.py turns it on.
        "state_index_max_users": 0,
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
def settings(database_url: str) -> Settings:
    return make_settings(database_url)


@pytest.fixture
async def server(settings: Settings) -> AsyncIterator[AuthServer]:
    async with AuthServer(settings) as srv:
        yield srv


@pytest.fixture
async def channel(server: AuthServer) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(server.address) as ch:
        yield ch


@pytest.fixture
def auth_stub(channel: grpc.aio.Channel) -> auth_pb2_grpc.AuthServiceStub:
    return auth_pb2_grpc.AuthServiceStub(channel)


@pytest.fixture
def admin_stub(channel: grpc.aio.Channel) -> admin_pb2_grpc.UserAdminServiceStub:
    return admin_pb2_grpc.UserAdminServiceStub(channel)


@pytest.fixture(scope="session")
def embedded_kafka_bootstrap() -> Iterator[str]:
    """Bootstrap servers of a Kafka-protocol broker (embedded Tansu by default)."""
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if external:
        yield external
        return
    with embedded(EmbeddedKafka) as broker:
        yield broker.bootstrap_servers


@pytest.fixture(scope="session")
def kafka_bootstrap(embedded_kafka_bootstrap: str) -> str:
    """The broker of tests outside tests/events (which run on Apache Kafka too)."""
    return embedded_kafka_bootstrap


@pytest.fixture(scope="session")
def apache_kafka() -> Iterator[ApacheKafka]:
    """Apache Kafka itself: one KRaft node with docker-compose.yml's broker settings
    (auto.create.topics.enable=false). Without Java 17+ or Maven the test is skipped
    with what to install; with CI=true it fails instead."""
    problem = apache_kafka_missing()
    if problem is not None:
        _missing("Apache Kafka", EmbeddedError(problem))
    try:
        kafka = ApacheKafka()
        kafka.start()
    except EmbeddedError as exc:
        _missing("Apache Kafka", exc)
    try:
        yield kafka
    finally:
        kafka.close()


@pytest.fixture
def private_kafka() -> Iterator[EmbeddedKafka]:
    """A broker of this test's own, which the test may stop and start again (on the
    same port; a restarted embedded broker is empty)."""
    with embedded(EmbeddedKafka) as broker:
        yield broker


@pytest.fixture
def topic_name() -> str:
    """A topic name no other test uses."""
    return f"t-{uuid.uuid4().hex[:12]}"


async def eventually(
    check: Callable[[], Awaitable[bool]], timeout: float = 10.0, interval: float = 0.05
) -> None:
    """Poll `check` until it is true; fail the test after `timeout` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        if await check():
            return
        if loop.time() > deadline:
            pytest.fail(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)
