"""`auth-service dev`: everything needed to try the service, in one command.

Starts an embedded PostgreSQL (unless DATABASE_URL is exported) and an embedded
Kafka-compatible broker (unless KAFKA_BOOTSTRAP_SERVERS is exported; the in-process
relay publishes user_deleted events to it), applies migrations, creates demo users,
serves the API with reads open to callers without a token, and prints where it
listens and commands to try that run as printed. An exported server that cannot be
reached fails at once, saying which variable pointed there. Ctrl-C stops
everything it started.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import shlex
import socket
import sys
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

from auth_service import tracing
from auth_service.addresses import parse_host_port
from auth_service.api import logs
from auth_service.api.server import AuthServer
from auth_service.config import Settings
from auth_service.local.broker import EmbeddedKafka, create_topics
from auth_service.local.embedded import EmbeddedPostgres
from auth_service.signals import wait_for_shutdown_signal
from auth_service.store.connection import UnreachableError, check_reachable, where
from auth_service.store.migrations import migrate
from auth_service.store.pool import Budget
from auth_service.store.users import User, UserRepository, find_active_by_username

log = logging.getLogger(__name__)

DEMO_USERS = (("alice", "Alice Example"), ("bob", "Bob Example"), ("carol", "Carol Example"))


class DevError(RuntimeError):
    """`dev` cannot start; the message says why in one line."""


@dataclass(frozen=True)
class DevOptions:
    listen: str = "127.0.0.1:50051"
    admin_token: str | None = None
    data_dir: Path | None = None
    database_url: str | None = None
    log_level: str = "INFO"
    # The embedded broker listens here unless kafka_bootstrap_servers is given.
    kafka_listen: str = "127.0.0.1:9092"
    kafka_bootstrap_servers: str | None = None
    # Prometheus /metrics endpoint (off unless set).
    metrics_listen: str | None = None
    # Tracing: the OTEL_* settings read from the environment (config.otel_from_env),
    # as Settings attributes.
    otel: Mapping[str, Any] = field(default_factory=dict)


async def seed_demo_users(database_url: str) -> list[User]:
    """The demo users, created unless an active user already has the name (a kept
    --data-dir or an external DATABASE_URL)."""
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=1)
    try:
        repo = UserRepository(pool)
        out: list[User] = []
        for name, display in DEMO_USERS:
            async with pool.acquire() as conn:
                existing = await find_active_by_username(conn, name)
            out.append(
                existing or await repo.create(name, display, f"{name}@example.com", Budget(5.0))
            )
        return out
    finally:
        await pool.close()


def _redact(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urllib.parse.urlunsplit(parts._replace(netloc=netloc))
    return url


def installed_command(name: str) -> str | None:
    """How to run console script `name` of this environment from the current
    directory, as printed: `.venv/bin/NAME` inside the checkout, else the full path."""
    path = Path(sys.executable).parent / name
    if not path.exists():
        return None
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def try_it(address: str, token: str, user_id: str) -> list[str]:
    """Commands that run as printed, with what this environment has installed."""
    lines: list[str] = []
    buf = installed_command("buf")
    if buf:
        body = shlex.quote(json.dumps({"user_id": user_id}))
        lines.append(
            f"{buf} curl --protocol grpc --http2-prior-knowledge -d {body}"
            f" http://{address}/auth.v1.AuthService/UserExists"
        )
    cli = installed_command("auth-service") or f"{sys.executable} -m auth_service"
    lines.append(
        f"AUTH_SERVICE_TARGET={address} AUTH_SERVICE_TOKEN={token} {cli} users create dave"
    )
    return lines


def banner(server: AuthServer, token: str, users: list[User], extra: list[str]) -> str:
    addr = server.address
    lines = [
        "",
        "auth-service dev is running",
        f"  gRPC          {addr}  (plaintext; reflection on; reads need no token)",
        f"  admin token   {token}",
        *extra,
        "  demo users",
        *(f"    {u.username:<8} {u.id}" for u in users),
        "",
        "  try it (from this directory):",
        *(f"    {line}" for line in try_it(addr, token, str(users[0].id))),
        "",
        "  Ctrl-C stops everything.",
        "",
    ]
    return "\n".join(lines)


async def run_dev(options: DevOptions) -> int:
    """The composition root of `dev`: each part started in order on one exit stack,
    stopped in reverse (Ctrl-C)."""
    logs.configure(options.log_level, "text")
    token = options.admin_token or secrets.token_urlsafe(24)
    async with contextlib.AsyncExitStack() as stack:
        database_url, db_kind = await _database(stack, options)
        bootstrap, kafka_kind = await _broker(stack, options)
        await asyncio.to_thread(migrate, database_url, wait_s=10)
        users = await seed_demo_users(database_url)
        settings = dev_settings(options, database_url, bootstrap, token)
        if options.kafka_bootstrap_servers is None:  # an exported broker's are ops'
            topics = (settings.kafka_topic, settings.kafka_user_created_topic)
            await create_topics(bootstrap, [t for t in topics if t])
        await stack.enter_async_context(tracing.exporting(settings.tracing))
        server = await stack.enter_async_context(AuthServer(settings))
        lines = [
            f"  postgres      {_redact(database_url)}  ({db_kind})",
            (
                f"  kafka         {bootstrap}  ({kafka_kind}; the relay publishes"
                f" user_deleted events to topic {settings.kafka_topic},"
                f" user_created to {settings.kafka_user_created_topic})"
            ),
        ]
        if server.metrics is not None:
            lines.append(f"  metrics       {server.metrics.url}")
        # Handlers first, then the banner: a Ctrl-C right after the banner (a
        # script that waits for it) must stop dev cleanly, not interrupt it.
        stop = asyncio.create_task(wait_for_shutdown_signal())
        await asyncio.sleep(0)
        print(banner(server, token, users, lines), flush=True)  # noqa: T201
        await stop
        print("stopping...", file=sys.stderr, flush=True)  # noqa: T201
    return 0


def dev_settings(options: DevOptions, database_url: str, bootstrap: str, token: str) -> Settings:
    """What `dev` serves with: reads open to callers without a token, the relay on,
    tracing as the OTEL_* variables say (`options.otel`)."""
    return Settings(
        database_url=database_url,
        listen=options.listen,
        admin_tokens=(token,),
        allow_unauthenticated_reads=True,
        log_level=options.log_level,
        log_format="text",
        shutdown_grace_s=2.0,
        kafka_bootstrap_servers=bootstrap,
        # user_created events on, so a client's local replica (ReplicaConfig) can
        # follow this server (run_dev creates the topics before the banner).
        kafka_user_created_topic="user_created",
        metrics_listen=options.metrics_listen,
        **options.otel,
    )


async def _database(stack: contextlib.AsyncExitStack, options: DevOptions) -> tuple[str, str]:
    """DATABASE_URL when exported (it must answer), else an embedded PostgreSQL."""
    if options.database_url is not None:
        await _check_exported_database(options.database_url)
        return options.database_url, "from DATABASE_URL; unset it for the embedded one"
    pg = EmbeddedPostgres(options.data_dir)
    stack.callback(pg.close)
    await asyncio.to_thread(pg.start)
    log.info("embedded PostgreSQL on %s:%s", pg.host, pg.port)
    return pg.url, "embedded"


async def _broker(stack: contextlib.AsyncExitStack, options: DevOptions) -> tuple[str, str]:
    """KAFKA_BOOTSTRAP_SERVERS when exported (a broker must answer), else an
    embedded one."""
    if options.kafka_bootstrap_servers is not None:
        await asyncio.to_thread(_check_exported_kafka, options.kafka_bootstrap_servers)
        return options.kafka_bootstrap_servers, "from KAFKA_BOOTSTRAP_SERVERS"
    host, port = parse_host_port(options.kafka_listen)
    broker = EmbeddedKafka(host=host, port=port)
    stack.callback(broker.close)
    await asyncio.to_thread(broker.start)
    return broker.bootstrap_servers, "embedded, in memory"


async def _check_exported_database(database_url: str) -> None:
    """An exported DATABASE_URL is used instead of the embedded PostgreSQL: say so,
    and fail at once (not after a long wait) when it cannot be reached."""
    log.info("using DATABASE_URL from the environment: %s", where(database_url))
    try:
        await check_reachable(database_url, timeout=5.0)
    except UnreachableError as exc:
        raise DevError(
            f"DATABASE_URL is exported: {exc} (unset DATABASE_URL to use the embedded PostgreSQL)"
        ) from exc


def _check_exported_kafka(bootstrap: str) -> None:
    """The same for KAFKA_BOOTSTRAP_SERVERS: one of its brokers must accept a TCP
    connection."""
    log.info("using KAFKA_BOOTSTRAP_SERVERS from the environment: %s", bootstrap)
    problems = []
    for server in bootstrap.split(","):
        host, port = parse_host_port(server)
        try:
            with socket.create_connection((host.strip("[]"), port), timeout=3.0):
                return
        except OSError as exc:
            problems.append(f"{server}: {exc.strerror or exc}")
    raise DevError(
        f"KAFKA_BOOTSTRAP_SERVERS is exported but no broker answers ({'; '.join(problems)});"
        " unset KAFKA_BOOTSTRAP_SERVERS to use the embedded broker"
    )
