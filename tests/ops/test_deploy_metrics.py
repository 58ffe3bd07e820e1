"""The alerts (deploy/prometheus/alerts.yml) and the dashboard
(deploy/grafana/auth-service.json) cannot drift from the code: every metric, label
and label value they query is exported by real processes (as are the metric names
and selectors the docs show), and every metric the processes export has a panel.

The processes, as deploy/kubernetes runs them: `auth-service serve` with
RELAY_ENABLED=false (scrape job `auth-service`), `auth-service relay` publishing to
the embedded broker (job `auth-relay`), each with METRICS_LISTEN on a free port; and
a real AuthClient in this process, exported with prometheus-client's own HTTP server
as a calling service would (its job is the calling service's).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from typing import TYPE_CHECKING

import grpc
import pytest
from prometheus_client import start_http_server

from auth_client import AuthClient, UserNotFoundError
from auth_client.contract import admin_pb2, admin_pb2_grpc
from auth_service.local.embedded import free_port
from tests.conftest import eventually
from tests.events.support import create_topic
from tests.ops import promql
from tests.ops.support import Service, clean_env, parse, run_cli, scrape, value

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

ADMIN_TOKEN = f"drift-admin-{uuid.uuid4().hex}"
READER_TOKEN = f"drift-reader-{uuid.uuid4().hex}"
OURS = (
    "grpc_server_",
    "db_pool_",
    "outbox_",
    "auth_client_",
    "auth_state_cache_",
    "auth_state_index_",
    "auth_lookup_",
    "users_eras",
)


async def _text(url: str) -> str:
    return await asyncio.to_thread(scrape, url)


@contextlib.asynccontextmanager
async def _scrapes(database_url: str, kafka_bootstrap: str) -> AsyncIterator[dict[str, str]]:
    """Run serve, relay and a client through a deletion; yield their three scrapes."""
    topic = f"drift-{uuid.uuid4().hex[:10]}"
    await create_topic(kafka_bootstrap, topic, 1)
    target = f"127.0.0.1:{free_port()}"
    serve_url = f"http://127.0.0.1:{free_port()}/metrics"
    relay_url = f"http://127.0.0.1:{free_port()}/metrics"
    common = {"DATABASE_URL": database_url, "LOG_FORMAT": "json"}
    serve_env = clean_env(
        **common,
        GRPC_LISTEN=target,
        METRICS_LISTEN=serve_url.removeprefix("http://").removesuffix("/metrics"),
        RELAY_ENABLED="false",
        # The database as its own read replica (a primary answers the replica checks
        # too): the auth_db_replica_* families are exported with a replica in them.
        DATABASE_READ_URL=database_url,
        ADMIN_TOKENS=ADMIN_TOKEN,
        AUTH_TOKENS=f"drift users:read {READER_TOKEN}",
    )
    relay_env = clean_env(
        **common,
        METRICS_LISTEN=relay_url.removeprefix("http://").removesuffix("/metrics"),
        KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap,
        KAFKA_TOPIC=topic,
        KAFKA_ENABLE_IDEMPOTENCE="false",
        RELAY_POLL_INTERVAL_S="0.5",
    )

    async def healthy() -> bool:
        code, _, _ = await run_cli("health", "--target", target, env=serve_env)
        return code == 0

    async def relay_up() -> bool:
        return "outbox_unpublished_rows" in await _text(relay_url)

    async with (
        Service("auth-service", "serve", env=serve_env) as serve,
        Service("auth-service", "relay", env=relay_env) as relay,
    ):
        await serve.wait_until_up(healthy)
        await relay.wait_until_up(relay_up)
        admin_md = (("authorization", f"Bearer {ADMIN_TOKEN}"),)
        async with grpc.aio.insecure_channel(target) as channel:
            admin = admin_pb2_grpc.UserAdminServiceStub(channel)
            user = (
                await admin.CreateUser(
                    admin_pb2.CreateUserRequest(username=f"d{uuid.uuid4().hex[:8]}"),
                    metadata=admin_md,
                    timeout=10,
                )
            ).user
            async with AuthClient(target, token=READER_TOKEN, name="drift") as client:
                await client.require_user(user.id)
                await client.require_user(user.id)  # a cache hit
                assert await client.users_exist([user.id, str(uuid.uuid4())])
                await admin.DeleteUser(
                    admin_pb2.DeleteUserRequest(user_id=user.id), metadata=admin_md, timeout=10
                )
                client.invalidate(user.id)
                with pytest.raises(UserNotFoundError):
                    await client.require_user(user.id)

                async def published() -> bool:
                    found = parse(await _text(relay_url))
                    return value(found, "outbox_events_published_total") >= 1

                await eventually(published, timeout=30, interval=0.2)
                exporter, thread = start_http_server(0, addr="127.0.0.1")
                try:
                    client_url = f"http://127.0.0.1:{exporter.server_port}/metrics"
                    yield {
                        "auth-service": await _text(serve_url),
                        "auth-relay": await _text(relay_url),
                        "client": await _text(client_url),
                    }
                finally:
                    exporter.shutdown()
                    exporter.server_close()
                    thread.join(5)


async def test_every_queried_metric_label_and_value_is_exported(
    database_url: str, kafka_bootstrap: str
) -> None:
    async with _scrapes(database_url, kafka_bootstrap) as texts:
        processes = {
            "auth-service": promql.Exported(texts["auth-service"]),
            "auth-relay": promql.Exported(texts["auth-relay"]),
        }
        # This test process's registry also holds the server's collectors (the suite
        # imports auth_service); a calling service's process has only auth_client's.
        client = promql.Exported(texts["client"], prefixes=("auth_client_",))
        assert set(processes) == set(promql.scrape_jobs())

        found = []
        for query in promql.queries():
            found.extend(promql.problems(query, processes, client))
        assert found == []
        # The metric names and selectors the docs show (any process will do: the
        # docs' examples leave the job out).
        in_docs = promql.doc_queries()
        assert len(in_docs) > 20
        for query in in_docs:
            found.extend(promql.problems(query, processes, client, anywhere=True))
        assert found == []

        # And the other way round: every metric of ours has a panel.
        names = promql.queried_names()
        families = {
            name: kind
            for exported in (*processes.values(), client)
            for name, kind in exported.families.items()
            if name.startswith(OURS)
        }
        assert {"grpc_server_handling_seconds", "outbox_events_published"} <= set(families)
        assert list(promql.uncovered(families, names)) == []
