"""The compose stack's containers, run as processes: the commands docs/operations.md
gives are these tests' commands. Keep the two in sync (the guide names this file).

- `auth-service migrate --wait 60` (the one-shot `migrate` service; concurrent runs
  are safe, a re-run is a no-op);
- `auth-service serve` with RELAY_ENABLED=false and METRICS_LISTEN (`auth-service`),
  probed with `auth-service health` (its HEALTHCHECK);
- `auth-service relay` with METRICS_LISTEN (`relay`), probed with
  `auth-service health --http http://HOST:PORT/metrics`;
- `python examples/cleanup_messaging.py --bootstrap ... --database-url ... --topic
  ... --group ...` (`messaging-cleanup`);
- a Prometheus scrape of both /metrics endpoints.

Differences from the compose file, on purpose: loopback addresses and free ports,
the embedded broker (KAFKA_ENABLE_IDEMPOTENCE=false: it lacks InitProducerId;
the compose stack runs real Kafka with it on), and a per-test topic.
"""

from __future__ import annotations

import asyncio
import sys
import uuid
from typing import TYPE_CHECKING

import asyncpg
import grpc

from auth_client.contract import admin_pb2, admin_pb2_grpc
from auth_service.local.embedded import free_port
from tests.conftest import eventually
from tests.events.support import create_topic
from tests.ops.support import REPO, Service, clean_env, run_cli, samples, value

if TYPE_CHECKING:
    from collections.abc import Callable

ADMIN_TOKEN = f"ops-admin-{uuid.uuid4().hex}"


async def _empty_database(pg_admin_url: str) -> str:
    name = f"ops_{uuid.uuid4().hex[:16]}"
    conn = await asyncpg.connect(pg_admin_url)
    try:
        await conn.execute(f"CREATE DATABASE {name}")
    finally:
        await conn.close()
    head, _, tail = pg_admin_url.rpartition("/")
    query = tail.partition("?")[2]
    return f"{head}/{name}" + (f"?{query}" if query else "")


async def _drop(pg_admin_url: str, url: str) -> None:
    name = url.rpartition("/")[2].partition("?")[0]
    conn = await asyncpg.connect(pg_admin_url)
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        await conn.close()


async def test_migrate_one_shot_concurrent_then_noop(pg_admin_url: str) -> None:
    url = await _empty_database(pg_admin_url)
    try:
        env = clean_env(DATABASE_URL=url)
        # Two replicas' one-shots starting together: the migration lock serializes them.
        results = await asyncio.gather(
            run_cli("migrate", "--wait", "60", env=env), run_cli("migrate", "--wait", "60", env=env)
        )
        assert [code for code, _, _ in results] == [0, 0], results
        applied = "".join(out for _, out, _ in results)
        assert applied.count("Applied: 20261122000100_create_users.sql") == 1
        code, out, _ = await run_cli("migrate", "--wait", "60", env=env)
        assert (code, out.strip()) == (0, "no pending migrations")
    finally:
        await _drop(pg_admin_url, url)


async def test_stack_serve_relay_consumer_and_scrapes(
    pg_admin_url: str, new_database: Callable[[], str], kafka_bootstrap: str
) -> None:
    auth_db = await _empty_database(pg_admin_url)
    messaging_db = new_database()
    topic = f"ops-{uuid.uuid4().hex[:10]}"
    await create_topic(kafka_bootstrap, topic, 3)
    grpc_port, serve_metrics, relay_metrics = free_port(), free_port(), free_port()
    target = f"127.0.0.1:{grpc_port}"
    common = {"DATABASE_URL": auth_db, "LOG_FORMAT": "json", "LOG_LEVEL": "INFO"}
    serve_env = clean_env(
        **common,
        GRPC_LISTEN=target,
        METRICS_LISTEN=f"127.0.0.1:{serve_metrics}",
        RELAY_ENABLED="false",
        ADMIN_TOKENS=ADMIN_TOKEN,
        AUTH_TOKENS="messaging users:read ops-reader-token-0123456789",
    )
    relay_env = clean_env(
        **common,
        METRICS_LISTEN=f"127.0.0.1:{relay_metrics}",
        KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap,
        KAFKA_TOPIC=topic,
        KAFKA_ENABLE_IDEMPOTENCE="false",
        RELAY_POLL_INTERVAL_S="0.5",
    )
    try:
        code, _, err = await run_cli("migrate", "--wait", "60", env=clean_env(**common))
        assert code == 0, err

        async def healthy(*args: str, env: dict[str, str]) -> bool:
            code, _, _ = await run_cli("health", *args, env=env)
            return code == 0

        async with (
            Service("auth-service", "serve", env=serve_env) as serve,
            Service("auth-service", "relay", env=relay_env) as relay,
        ):
            # The HEALTHCHECKs: the image's default probe (target from GRPC_LISTEN)
            # and the relay's metrics probe.
            await serve.wait_until_up(lambda: healthy(env=serve_env))
            relay_url = f"http://127.0.0.1:{relay_metrics}/metrics"
            await relay.wait_until_up(lambda: healthy("--http", relay_url, env=relay_env))

            admin_md = (("authorization", f"Bearer {ADMIN_TOKEN}"),)
            async with grpc.aio.insecure_channel(target) as channel:
                admin = admin_pb2_grpc.UserAdminServiceStub(channel)
                user = (
                    await admin.CreateUser(
                        admin_pb2.CreateUserRequest(username="opsuser"),
                        metadata=admin_md,
                        timeout=10,
                    )
                ).user
                consumer_argv = (
                    sys.executable, str(REPO / "examples" / "cleanup_messaging.py"),
                    "--bootstrap", kafka_bootstrap, "--database-url", messaging_db,
                    "--topic", topic, "--group", f"g-{uuid.uuid4().hex[:8]}", "--seed", user.id,
                )  # fmt: skip
                async with Service(*consumer_argv, env=clean_env()) as consumer:

                    async def consuming() -> bool:
                        return "consuming" in consumer.output()

                    await consumer.wait_until_up(consuming)
                    assert await _memberships(messaging_db, user.id) == 1
                    await admin.DeleteUser(
                        admin_pb2.DeleteUserRequest(user_id=user.id), metadata=admin_md, timeout=10
                    )

                    async def cleaned_up() -> bool:
                        return await _memberships(messaging_db, user.id) == 0

                    await eventually(cleaned_up, timeout=60)
                    assert await consumer.stop() == 0

            served = await samples(f"http://127.0.0.1:{serve_metrics}/metrics")
            assert (
                value(
                    served,
                    "grpc_server_handled_total",
                    grpc_method="DeleteUser",
                    grpc_code="OK",
                    caller="admin",
                )
                == 1
            )

            async def drained() -> bool:
                found = await samples(relay_url)
                return (
                    value(found, "outbox_events_published_total") >= 1
                    and value(found, "outbox_unpublished_rows") == 0
                )

            await eventually(drained, timeout=30)
            assert await serve.stop() == 0
            assert await relay.stop() == 0
            assert "auth-service stopped" in serve.output()
    finally:
        await _drop(pg_admin_url, auth_db)


async def _memberships(database_url: str, user_id: str) -> int:
    conn = await asyncpg.connect(database_url)
    try:
        return int(
            await conn.fetchval(
                "SELECT count(*) FROM messaging.conversation_members WHERE user_id = $1::uuid",
                user_id,
            )
        )
    finally:
        await conn.close()


async def test_dev_serves_metrics_and_readable_logs() -> None:
    """`auth-service dev --metrics-listen`: the banner names the endpoint, it answers
    with the server's metrics, and dev logs are human-readable text (DEBUG: one line
    per call), not JSON."""
    grpc_port, metrics_port = free_port(), free_port()
    target = f"127.0.0.1:{grpc_port}"
    url = f"http://127.0.0.1:{metrics_port}/metrics"
    token = f"dev-ops-{uuid.uuid4().hex}"
    args = (
        "auth-service", "dev", "--listen", target, "--admin-token", token,
        "--kafka-listen", f"127.0.0.1:{free_port()}",
        "--metrics-listen", f"127.0.0.1:{metrics_port}", "--log-level", "DEBUG",
    )  # fmt: skip
    async with Service(*args, env=clean_env()) as dev:

        async def up() -> bool:
            code, _, _ = await run_cli("health", "--target", target, env=clean_env())
            return code == 0

        await dev.wait_until_up(up, timeout=120)
        async with grpc.aio.insecure_channel(target) as channel:
            await admin_pb2_grpc.UserAdminServiceStub(channel).CreateUser(
                admin_pb2.CreateUserRequest(username="devops"),
                metadata=(("authorization", f"Bearer {token}"),),
                timeout=10,
            )
        found = await samples(url)
        assert (
            value(found, "grpc_server_handled_total", grpc_method="CreateUser", caller="admin") == 1
        )
        assert await dev.stop(timeout=60) == 0
        # Dev writes its banner on stdout (not captured here) and text logs on stderr.
        text = dev.output()
    assert "CreateUser OK in" in text
    assert "(caller admin, request id " in text
    assert not any(line.lstrip().startswith("{") for line in text.splitlines())


async def test_workers_each_serve_metrics_on_port_plus_index(database_url: str) -> None:
    """`serve --workers 2 --metrics-listen HOST:P`: worker i answers on P + i."""
    grpc_port, metrics_port = free_port(), free_port()
    while metrics_port + 1 == grpc_port:
        metrics_port = free_port()
    env = clean_env(DATABASE_URL=database_url, RELAY_ENABLED="false", LOG_FORMAT="json")
    args = (
        "auth-service", "serve", "--listen", f"127.0.0.1:{grpc_port}", "--workers", "2",
        "--metrics-listen", f"127.0.0.1:{metrics_port}",
    )  # fmt: skip
    async with Service(*args, env=env) as serve:
        for port in (metrics_port, metrics_port + 1):
            url = f"http://127.0.0.1:{port}/metrics"

            async def answers(url: str = url) -> bool:
                code, _, _ = await run_cli("health", "--http", url, env=clean_env())
                return code == 0

            await serve.wait_until_up(answers, timeout=60)
        assert await serve.stop() == 0
