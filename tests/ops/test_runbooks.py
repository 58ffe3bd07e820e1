"""The runbooks of docs/operations.md, played against real processes: what an
operator sees (health probe, metrics, logs) while PostgreSQL or Kafka is away, and
that service resumes by itself when it is back. The guide's commands and metric
names are the ones used here; keep them in sync."""

from __future__ import annotations

import asyncio
import uuid
from typing import TYPE_CHECKING

import asyncpg
import grpc
import pytest

from auth_client.contract import admin_pb2, admin_pb2_grpc, auth_pb2, auth_pb2_grpc
from auth_service.api.server import AuthServer
from auth_service.local.broker import EmbeddedKafka
from auth_service.local.embedded import (
    EmbeddedError,
    EmbeddedPostgres,
    free_port,
    postgres_bin_dir,
)
from tests.conftest import eventually, make_settings
from tests.events.support import Collector, admin_stub
from tests.helpers import create_user, delete_user, expect_status
from tests.ops.support import Service, clean_env, run_cli, samples, value

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from pathlib import Path

ADMIN_TOKEN = f"runbook-admin-{uuid.uuid4().hex}"
READER_TOKEN = f"runbook-reader-{uuid.uuid4().hex}"
ADMIN_MD = (("authorization", f"Bearer {ADMIN_TOKEN}"),)


def _serve_env(database_url: str, port: int, **extra: str) -> dict[str, str]:
    return clean_env(
        DATABASE_URL=database_url,
        GRPC_LISTEN=f"127.0.0.1:{port}",
        RELAY_ENABLED="false",
        ADMIN_TOKENS=ADMIN_TOKEN,
        AUTH_TOKENS=f"messaging users:read {READER_TOKEN}",
        LOG_FORMAT="json",
        HEALTH_CHECK_INTERVAL_S="0.5",
        DB_CONNECT_TIMEOUT_S="2",
        **extra,
    )


def _probe(*args: str) -> Callable[[], Awaitable[bool]]:
    async def healthy() -> bool:
        code, _, _ = await run_cli("health", *args, env=clean_env())
        return code == 0

    return healthy


async def test_postgresql_failover(private_postgres: EmbeddedPostgres) -> None:
    """Runbook "PostgreSQL failover": while the database is away the probe says
    NOT_SERVING, callers get UNAVAILABLE (counted per caller, logged with a request
    id), and the same process serves again once the database is back."""
    port, metrics = free_port(), free_port()
    target = f"127.0.0.1:{port}"
    metrics_url = f"http://127.0.0.1:{metrics}/metrics"
    reader = (("authorization", f"Bearer {READER_TOKEN}"),)
    request = auth_pb2.UserExistsRequest(user_id=str(uuid.uuid4()))
    async with Service(
        "auth-service",
        "serve",
        "--metrics-listen",
        f"127.0.0.1:{metrics}",
        env=_serve_env(private_postgres.url, port),
    ) as serve:
        await serve.wait_until_up(_probe("--target", target))
        async with grpc.aio.insecure_channel(target) as channel:
            reads = auth_pb2_grpc.AuthServiceStub(channel)
            assert not (await reads.UserExists(request, metadata=reader, timeout=5)).exists

            await asyncio.to_thread(private_postgres.stop)
            await expect_status(
                reads.UserExists(
                    request, metadata=(*reader, ("x-request-id", "failover-1")), timeout=5
                ),
                grpc.StatusCode.UNAVAILABLE,
            )
            code, out, _ = await run_cli("health", "--target", target, env=clean_env())
            if code == 0:  # the monitor pings every 0.5 s

                async def not_serving() -> bool:
                    code, _, _ = await run_cli("health", "--target", target, env=clean_env())
                    return code == 1

                await eventually(not_serving, timeout=30)
            else:
                assert out.strip() == "NOT_SERVING"
            found = await samples(metrics_url)
            assert (
                value(
                    found,
                    "grpc_server_handled_total",
                    grpc_method="UserExists",
                    grpc_code="Unavailable",
                    caller="messaging",
                )
                >= 1
            )

            await asyncio.to_thread(private_postgres.start)
            # The server's health can be SERVING again before the monitor's next ping
            # (memory answers every id once the change feed has reloaded the index);
            # the admin service says the database itself answers again.
            await eventually(
                _probe("--target", target, "--service", "auth.v1.UserAdminService"), timeout=60
            )

            async def answers() -> bool:
                try:
                    await reads.UserExists(request, metadata=reader, timeout=5)
                except grpc.aio.AioRpcError:
                    return False
                return True

            await eventually(answers, timeout=30)
        assert await serve.stop() == 0
        lines = serve.json_lines()
    failed = [line for line in lines if line.get("request_id") == "failover-1"]
    assert failed
    assert failed[0]["level"] == "warning"
    assert failed[0]["caller"] == "messaging"
    assert any("NOT_SERVING" in line["message"] for line in lines)
    assert any("reachable again" in line["message"] for line in lines)


async def test_kafka_down_for_an_hour(database_url: str, private_kafka: EmbeddedKafka) -> None:
    """Runbook "Kafka down for an hour" (a few seconds here): deletions keep being
    accepted, their events wait in the outbox (outbox_unpublished_rows,
    outbox_oldest_unpublished_age_seconds), and the relay drains every one of them
    once the broker is back, with no restart."""
    port, serve_metrics, relay_metrics = free_port(), free_port(), free_port()
    target = f"127.0.0.1:{port}"
    relay_url = f"http://127.0.0.1:{relay_metrics}/metrics"
    topic = "user_deleted"
    relay_env = clean_env(
        DATABASE_URL=database_url,
        METRICS_LISTEN=f"127.0.0.1:{relay_metrics}",
        KAFKA_BOOTSTRAP_SERVERS=private_kafka.bootstrap_servers,
        KAFKA_TOPIC=topic,
        KAFKA_REQUEST_TIMEOUT_S="2",
        RELAY_MAX_BACKOFF_S="1",
        RELAY_POLL_INTERVAL_S="0.5",
        LOG_FORMAT="json",
    )
    async with (
        Service(
            "auth-service",
            "serve",
            env=_serve_env(database_url, port, METRICS_LISTEN=f"127.0.0.1:{serve_metrics}"),
        ) as serve,
        Service("auth-service", "relay", env=relay_env) as relay,
    ):
        await serve.wait_until_up(_probe("--target", target))
        await relay.wait_until_up(_probe("--http", relay_url))
        await asyncio.to_thread(private_kafka.stop)

        async with grpc.aio.insecure_channel(target) as channel:
            admin = admin_pb2_grpc.UserAdminServiceStub(channel)
            users = []
            for _ in range(10):
                created = await admin.CreateUser(
                    admin_pb2.CreateUserRequest(username=f"k{uuid.uuid4().hex[:10]}"),
                    metadata=ADMIN_MD,
                    timeout=10,
                )
                await admin.DeleteUser(
                    admin_pb2.DeleteUserRequest(user_id=created.user.id),
                    metadata=ADMIN_MD,
                    timeout=10,
                )
                users.append(created.user.id)

        async def lagging() -> bool:
            found = await samples(relay_url)
            return (
                value(found, "outbox_unpublished_rows") == 10
                and value(found, "outbox_oldest_unpublished_age_seconds") > 0
            )

        await eventually(lagging, timeout=60)
        assert await _probe("--http", relay_url)()  # the relay itself stays up

        await asyncio.to_thread(private_kafka.start)
        async with Collector(private_kafka.bootstrap_servers, topic) as seen:

            async def drained() -> bool:
                found = await samples(relay_url)
                return (
                    value(found, "outbox_unpublished_rows") == 0
                    and value(found, "outbox_events_published_total") >= 10
                    and set(users) <= set(seen.user_ids())
                )

            await eventually(drained, timeout=90)
        assert await relay.stop() == 0
        assert await serve.stop() == 0
        warnings = [line for line in relay.json_lines() if line["level"] == "warning"]
    assert any("outbox relay" in line["message"] for line in warnings)


async def test_backup_and_restore_keep_pending_events(
    database_url: str, pg_admin_url: str, kafka_bootstrap: str, tmp_path: Path
) -> None:
    """Backups: `pg_dump --format=custom` of the auth database includes the outbox, so
    a deletion whose event had not been published yet is published by a relay
    running against the restored database; `migrate` on it has nothing to do."""
    try:
        bin_dir = postgres_bin_dir()
    except EmbeddedError as exc:
        pytest.skip(f"pg_dump not available: {exc}")
    async with (
        AuthServer(make_settings(database_url)) as server,
        admin_stub(server.address) as admin,
    ):
        user_id = (await create_user(admin)).id
        await delete_user(admin, user_id)  # no relay in this server: the event waits
    dump = tmp_path / "auth.dump"
    backup = await asyncio.create_subprocess_exec(
        str(bin_dir / "pg_dump"), "--format=custom", "--file", str(dump), database_url
    )
    assert await backup.wait() == 0

    restored = database_url.rpartition("/")[0] + f"/restored_{uuid.uuid4().hex[:10]}"
    name = restored.rpartition("/")[2]
    conn = await asyncpg.connect(pg_admin_url)
    await conn.execute(f"CREATE DATABASE {name}")
    await conn.close()
    try:
        restore = await asyncio.create_subprocess_exec(
            str(bin_dir / "pg_restore"), "--no-owner", "--dbname", restored, str(dump)
        )
        assert await restore.wait() == 0
        code, out, _ = await run_cli("migrate", env=clean_env(DATABASE_URL=restored))
        assert (code, out.strip()) == (0, "no pending migrations")

        topic = f"restore-{uuid.uuid4().hex[:8]}"
        relay_env = clean_env(
            DATABASE_URL=restored, KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap, KAFKA_TOPIC=topic
        )
        async with (
            Service("auth-service", "relay", env=relay_env) as relay,
            Collector(kafka_bootstrap, topic) as seen,
        ):

            async def published() -> bool:
                return seen.user_ids() == [user_id]

            await eventually(published, timeout=60)
            assert await relay.stop() == 0
    finally:
        conn = await asyncpg.connect(pg_admin_url)
        await conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await conn.close()
