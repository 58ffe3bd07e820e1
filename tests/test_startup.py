"""`auth-service serve` starting against a database that is not ready, or on a port
that is taken: one clear line an operator can act on, health never SERVING for a
database it cannot serve, recovery by itself once fixed."""

from __future__ import annotations

import asyncio
import socket
import uuid

import asyncpg
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from auth_client.contract import auth_pb2, auth_pb2_grpc
from auth_service.api.server import AuthServer
from auth_service.local.embedded import free_port
from auth_service.store.migrations import bundled_versions
from tests.conftest import _admin, _with_database, eventually, make_settings
from tests.helpers import expect_status
from tests.ops.support import Service, clean_env, run_cli

TOKEN = f"admin-{uuid.uuid4().hex}"
MD = (("authorization", f"Bearer {TOKEN}"),)


def _env(database_url: str, port: int, **extra: str) -> dict[str, str]:
    values = {
        "DATABASE_URL": database_url,
        "GRPC_LISTEN": f"127.0.0.1:{port}",
        "ADMIN_TOKENS": TOKEN,
        "RELAY_ENABLED": "false",
        "HEALTH_CHECK_INTERVAL_S": "0.3",
        "LOG_FORMAT": "json",
    }
    return clean_env(**{**values, **extra})


async def _status(target: str) -> int | None:
    try:
        async with grpc.aio.insecure_channel(target) as channel:
            reply = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=2
            )
    except grpc.aio.AioRpcError:
        return None
    return int(reply.status)


async def test_an_unmigrated_database_is_never_serving_and_says_run_migrate(
    pg_admin_url: str,
) -> None:
    name = f"t_empty_{uuid.uuid4().hex[:12]}"
    await _admin(pg_admin_url, f"CREATE DATABASE {name}")
    url = _with_database(pg_admin_url, name)
    port = free_port()
    target = f"127.0.0.1:{port}"
    try:
        async with Service("auth-service", "serve", env=_env(url, port)) as srv:
            await srv.wait_until_up(lambda: _reachable(target))
            seen = set()
            for _ in range(10):  # about three health intervals
                seen.add(await _status(target))
                await asyncio.sleep(0.3)
            assert seen == {health_pb2.HealthCheckResponse.NOT_SERVING}
            async with grpc.aio.insecure_channel(target) as channel:
                try:
                    await auth_pb2_grpc.AuthServiceStub(channel).UserExists(
                        auth_pb2.UserExistsRequest(user_id=str(uuid.uuid4())),
                        metadata=MD,
                        timeout=5,
                    )
                except grpc.aio.AioRpcError as exc:
                    code = exc.code()
            assert code is grpc.StatusCode.UNAVAILABLE  # not INTERNAL
            problems = [
                line
                for line in srv.json_lines()
                if "auth-service migrate" in line["message"] and line["level"] == "error"
            ]
            assert len(problems) == 1, srv.output()
            assert problems[0]["level"] == "error"
            assert "behind" in problems[0]["message"]

            # Migrated meanwhile: the same process serves, without a restart.
            rc, _, err = await run_cli("migrate", env=clean_env(DATABASE_URL=url))
            assert rc == 0, err
            await srv.wait_until_up(
                lambda: _is(target, health_pb2.HealthCheckResponse.SERVING), timeout=20
            )
    finally:
        await _admin(pg_admin_url, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


async def _reachable(target: str) -> bool:
    return await _status(target) is not None


async def _is(target: str, status: int) -> bool:
    return await _status(target) == status


async def test_a_database_ahead_of_this_release_is_served(database_url: str) -> None:
    """A rolling upgrade migrates first: the previous release keeps serving."""
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("INSERT INTO schema_migrations (version) VALUES ('29991231235959')")
    finally:
        await conn.close()
    async with AuthServer(make_settings(database_url)) as server:
        assert await _status(server.address) == health_pb2.HealthCheckResponse.SERVING
    assert bundled_versions()[-1] < "29991231235959"


async def test_an_unreachable_database_is_named_once_with_the_reason() -> None:
    port, dead = free_port(), free_port()
    url = f"postgresql://auth:secret-pw@127.0.0.1:{dead}/authdb"
    env = _env(url, port, RELAY_ENABLED="true", KAFKA_BOOTSTRAP_SERVERS=f"127.0.0.1:{free_port()}")
    target = f"127.0.0.1:{port}"
    async with Service("auth-service", "serve", env=env) as srv:
        await srv.wait_until_up(lambda: _reachable(target))

        async def said() -> bool:  # raw text: a line may be half written
            return f"127.0.0.1:{dead}" in srv.output()

        await eventually(said)
        # Failures that can be counted from here: every call meets the refused
        # database (a connection attempt of the pool), while the health monitor
        # and the relay keep retrying behind it.
        async with grpc.aio.insecure_channel(target) as channel:
            reads = auth_pb2_grpc.AuthServiceStub(channel)
            for _ in range(20):
                request = auth_pb2.UserExistsRequest(user_id=str(uuid.uuid4()))
                await expect_status(
                    reads.UserExists(request, metadata=MD, timeout=5),
                    grpc.StatusCode.UNAVAILABLE,
                )
        assert await srv.stop() == 0
        lines = srv.json_lines()
        text = srv.output()
    assert "secret-pw" not in text
    named = [line for line in lines if f"127.0.0.1:{dead}" in line["message"]]
    # Once from the health monitor, once from the relay (whose retries are
    # rate-limited): never one line per retry or per failed call.
    assert 1 <= len(named) <= 2, named
    for line in named:
        assert "(database authdb, user auth)" in line["message"]
        assert "connection refused" in line["message"]
    assert not any(line["message"].endswith("ConnectionRefusedError") for line in lines)


async def test_a_taken_port_is_one_line_that_says_so_and_how_to_move(database_url: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        rc, _, err = await run_cli(
            "serve", env=_env(database_url, port, LOG_FORMAT="text"), timeout=60
        )
    assert rc == 1
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err  # no gRPC core line, no traceback
    assert f"127.0.0.1:{port}" in lines[0]
    assert "in use" in lines[0]
    assert "GRPC_LISTEN" in lines[0]
    assert "--listen" in lines[0]


async def test_a_wildcard_bind_is_logged_as_bound(database_url: str) -> None:
    port = free_port()
    env = _env(database_url, port, ALLOW_INSECURE="true", GRPC_LISTEN=f"0.0.0.0:{port}")
    async with Service("auth-service", "serve", env=env) as srv:
        await srv.wait_until_up(lambda: _is(f"127.0.0.1:{port}", 1))
        await srv.stop()
        listening = [line for line in srv.json_lines() if "listening on" in line["message"]]
    assert len(listening) == 1
    assert f"listening on 0.0.0.0:{port}" in listening[0]["message"]
