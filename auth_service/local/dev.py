"""`auth-service dev`: everything needed to try the service, in one command.

Starts an embedded PostgreSQL (unless DATABASE_URL is set) and an embedded
Kafka-compatible broker (unless KAFKA_BOOTSTRAP_SERVERS is set; the in-process relay
publishes user_deleted events to it), applies migrations,
creates demo users, serves the API with reads open to anonymous callers, and prints
where it listens. Ctrl-C stops everything it started.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import sys
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from auth_service.addresses import parse_host_port
from auth_service.api import logs
from auth_service.api.server import AuthServer
from auth_service.config import Settings
from auth_service.local.embedded import EmbeddedKafka, EmbeddedPostgres
from auth_service.signals import wait_for_shutdown_signal
from auth_service.store.migrations import migrate
from auth_service.store.pool import Budget
from auth_service.store.users import User, UserRepository, find_active_by_username

log = logging.getLogger(__name__)

DEMO_USERS = (("alice", "Alice Example"), ("bob", "Bob Example"), ("carol", "Carol Example"))


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
        "  try it:",
        f'    grpcurl -plaintext -d \'{{"user_id": "{users[0].id}"}}\' {addr} auth.v1.AuthService/UserExists',
        f"    AUTH_SERVICE_TARGET={addr} AUTH_SERVICE_TOKEN={token} auth-service users create dave",
        "",
        "  Ctrl-C stops everything.",
        "",
    ]
    return "\n".join(lines)


async def run_dev(options: DevOptions) -> int:
    logs.configure(options.log_level, "text")
    token = options.admin_token or secrets.token_urlsafe(24)
    with contextlib.ExitStack() as stack:
        database_url = options.database_url
        if database_url is None:
            pg = EmbeddedPostgres(options.data_dir)
            stack.callback(pg.close)
            await asyncio.to_thread(pg.start)
            database_url = pg.url
            log.info("embedded PostgreSQL on %s:%s", pg.host, pg.port)
        bootstrap = options.kafka_bootstrap_servers
        kafka_kind = "external"
        if bootstrap is None:
            host, port = parse_host_port(options.kafka_listen)
            broker = EmbeddedKafka(host=host, port=port)
            stack.callback(broker.close)
            await asyncio.to_thread(broker.start)
            bootstrap = broker.bootstrap_servers
            kafka_kind = "embedded, in memory"
        await asyncio.to_thread(migrate, database_url, wait_s=30)
        users = await seed_demo_users(database_url)
        settings = Settings(
            database_url=database_url,
            listen=options.listen,
            admin_tokens=(token,),
            allow_unauthenticated_reads=True,
            log_level=options.log_level,
            log_format="text",
            shutdown_grace_s=2.0,
            kafka_bootstrap_servers=bootstrap,
            metrics_listen=options.metrics_listen,
        )
        db_kind = "embedded" if options.database_url is None else "from DATABASE_URL"
        kafka = [
            f"  postgres      {_redact(database_url)}  ({db_kind})",
            (
                f"  kafka         {bootstrap}  ({kafka_kind}; the relay publishes"
                f" user_deleted events to topic {settings.kafka_topic})"
            ),
        ]
        async with AuthServer(settings) as server:
            if server.metrics is not None:
                kafka.append(f"  metrics       {server.metrics.url}")
            print(banner(server, token, users, kafka), flush=True)  # noqa: T201
            await wait_for_shutdown_signal()
            print("stopping...", file=sys.stderr, flush=True)  # noqa: T201
    return 0
