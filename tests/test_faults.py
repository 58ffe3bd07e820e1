"""Real faults: the database stops and comes back, a query outlives the caller's
deadline, the server gets SIGTERM with calls in flight."""

from __future__ import annotations

import asyncio
import os
import signal
import sys

import asyncpg
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from auth_client.contract import auth_pb2, auth_pb2_grpc
from auth_service.api.server import AuthServer
from auth_service.local.embedded import EmbeddedPostgres, free_port
from tests.conftest import eventually, make_settings
from tests.helpers import ADMIN_MD, ADMIN_TOKEN, create_user, expect_status

NEVER = "00000000-0000-4000-8000-000000000000"


async def _health(channel: grpc.aio.Channel, service: str = "") -> int:
    stub = health_pb2_grpc.HealthStub(channel)
    reply = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
    return int(reply.status)


async def test_database_down_is_unavailable_and_recovers_without_restart(
    private_postgres: EmbeddedPostgres,
) -> None:
    settings = make_settings(private_postgres.url)
    async with AuthServer(settings) as srv, grpc.aio.insecure_channel(srv.address) as ch:
        auth = auth_pb2_grpc.AuthServiceStub(ch)
        request = auth_pb2.UserExistsRequest(user_id=NEVER)
        assert (await auth.UserExists(request, timeout=5)).state == auth_pb2.USER_STATE_NOT_FOUND
        assert await _health(ch) == health_pb2.HealthCheckResponse.SERVING

        await asyncio.to_thread(private_postgres.stop)
        for _ in range(3):  # in-flight/pooled connections die; new ones are refused
            await expect_status(auth.UserExists(request, timeout=5), grpc.StatusCode.UNAVAILABLE)
        await expect_status(
            auth.BatchUserExists(auth_pb2.BatchUserExistsRequest(user_ids=[NEVER]), timeout=5),
            grpc.StatusCode.UNAVAILABLE,
        )

        async def not_serving() -> bool:
            return (
                await _health(ch, "auth.v1.AuthService")
                == health_pb2.HealthCheckResponse.NOT_SERVING
            )

        await eventually(not_serving)

        await asyncio.to_thread(private_postgres.start)

        async def serving_again() -> bool:
            try:
                reply = await auth.UserExists(request, timeout=5)
            except grpc.aio.AioRpcError:
                return False
            return reply.state == auth_pb2.USER_STATE_NOT_FOUND

        await eventually(serving_again, timeout=20)
        await eventually(lambda: _is_serving(ch), timeout=10)


async def _is_serving(ch: grpc.aio.Channel) -> bool:
    return await _health(ch) == health_pb2.HealthCheckResponse.SERVING


async def test_server_starts_while_database_is_down_and_serves_once_it_is_up(
    private_postgres: EmbeddedPostgres,
) -> None:
    await asyncio.to_thread(private_postgres.stop)
    settings = make_settings(private_postgres.url)
    async with AuthServer(settings) as srv, grpc.aio.insecure_channel(srv.address) as ch:
        assert await _health(ch) == health_pb2.HealthCheckResponse.NOT_SERVING
        auth = auth_pb2_grpc.AuthServiceStub(ch)
        request = auth_pb2.UserExistsRequest(user_id=NEVER)
        await expect_status(auth.UserExists(request, timeout=5), grpc.StatusCode.UNAVAILABLE)
        await asyncio.to_thread(private_postgres.start)
        await eventually(lambda: _is_serving(ch), timeout=10)
        assert (await auth.UserExists(request, timeout=5)).exists is False


async def test_caller_deadline_bounds_a_slow_query(server, auth_stub, admin_stub) -> None:
    user = await create_user(admin_stub)
    blocker = await asyncpg.connect(server.settings.database_url)
    try:
        tx = blocker.transaction()
        await tx.start()
        # Every read of users now waits for this lock: a "slow query".
        await blocker.execute("LOCK TABLE users IN ACCESS EXCLUSIVE MODE")
        loop = asyncio.get_running_loop()
        started = loop.time()
        await expect_status(
            auth_stub.UserExists(auth_pb2.UserExistsRequest(user_id=user.id), timeout=0.3),
            grpc.StatusCode.DEADLINE_EXCEEDED,
        )
        assert loop.time() - started < 5

        async def no_query_left_waiting() -> bool:
            waiting = await blocker.fetchval(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE application_name = 'auth-service' AND wait_event_type = 'Lock'"
            )
            return waiting == 0

        # The server cancelled its query when the deadline ran out, instead of
        # leaving it queued behind the lock until the statement timeout.
        await eventually(no_query_left_waiting, timeout=1.5)
        await tx.rollback()
    finally:
        await blocker.close()
    reply = await auth_stub.UserExists(auth_pb2.UserExistsRequest(user_id=user.id), timeout=5)
    assert reply.exists is True


async def _start_serve(database_url: str, port: int, grace: float) -> asyncio.subprocess.Process:
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "GRPC_LISTEN": f"127.0.0.1:{port}",
        "ADMIN_TOKENS": ADMIN_TOKEN,
        "SHUTDOWN_GRACE_S": str(grace),
        "HEALTH_CHECK_INTERVAL_S": "0.2",
        "RELAY_ENABLED": "false",
        # Connections opened up front: a new connection's first query would wait
        # behind the test's table lock before the test sees it inside the server.
        "DB_POOL_MIN_SIZE": "8",
        # One query per call, so the test can see every call waiting in PostgreSQL
        # (and no index of every user to answer them from memory).
        "DB_LOOKUP_CONCURRENCY": "0",
        "STATE_INDEX_MAX_USERS": "0",
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "auth_service",
        "serve",
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:

        async def up() -> bool:
            try:
                return await _health(ch) == health_pb2.HealthCheckResponse.SERVING
            except grpc.aio.AioRpcError:
                return False

        await eventually(up, timeout=20)
    return proc


async def test_sigterm_lets_in_flight_calls_finish_then_exits_zero(database_url: str) -> None:
    port = free_port()
    proc = await _start_serve(database_url, port, grace=10)
    blocker = await asyncpg.connect(database_url)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            auth = auth_pb2_grpc.AuthServiceStub(ch)
            tx = blocker.transaction()
            await tx.start()
            await blocker.execute("LOCK TABLE users IN ACCESS EXCLUSIVE MODE")
            in_flight = [
                asyncio.ensure_future(
                    auth.UserExists(
                        auth_pb2.UserExistsRequest(user_id=NEVER), metadata=ADMIN_MD, timeout=15
                    )
                )
                for _ in range(5)
            ]

            async def all_waiting() -> bool:
                n = await blocker.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                    "AND application_name = 'auth-service'"
                )
                return n == len(in_flight)  # every call is inside the server

            await eventually(all_waiting)
            proc.send_signal(signal.SIGTERM)
            await asyncio.sleep(0.5)
            assert proc.returncode is None  # still draining
            await tx.rollback()  # the slow query finishes now
            replies = await asyncio.gather(*in_flight)
            assert all(r.state == auth_pb2.USER_STATE_NOT_FOUND for r in replies)
        code = await asyncio.wait_for(proc.wait(), timeout=15)
        assert code == 0
    finally:
        await blocker.close()
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_sigterm_cuts_calls_that_outlive_the_grace_period(database_url: str) -> None:
    port = free_port()
    proc = await _start_serve(database_url, port, grace=0.5)
    blocker = await asyncpg.connect(database_url)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            auth = auth_pb2_grpc.AuthServiceStub(ch)
            tx = blocker.transaction()
            await tx.start()
            await blocker.execute("LOCK TABLE users IN ACCESS EXCLUSIVE MODE")
            call = asyncio.ensure_future(
                auth.UserExists(
                    auth_pb2.UserExistsRequest(user_id=NEVER), metadata=ADMIN_MD, timeout=30
                )
            )

            async def waiting() -> bool:
                n = await blocker.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                    "AND application_name = 'auth-service'"
                )
                return n == 1  # the call is inside the server, its query behind the lock

            await eventually(waiting)
            loop = asyncio.get_running_loop()
            started = loop.time()
            proc.send_signal(signal.SIGTERM)
            code = await asyncio.wait_for(proc.wait(), timeout=15)
            assert code == 0
            assert loop.time() - started < 8
            # The lock is still held: the call cannot have been answered, only cut.
            with pytest.raises(grpc.aio.AioRpcError) as cut:
                await call
            assert cut.value.code() in {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED}
            await tx.rollback()
    finally:
        await blocker.close()
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
