"""A call that needs no query is answered whatever the database is doing.

With the index of every user loaded and the change feed up, UserExists and
BatchUserExists of known ids are answered from memory. A slow query (a GetUser
waiting on a lock) or a frozen database must not make the server refuse them, and
health must keep the read API in rotation while it can answer; calls that need
the database are still refused at once (UNAVAILABLE) and the admin API reports
NOT_SERVING. Real PostgreSQL, a real server, a real lock held by another session.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import uuid

import asyncpg
import grpc
import psutil
from grpc_health.v1 import health_pb2, health_pb2_grpc

from auth_client.contract import admin_pb2, admin_pb2_grpc, auth_pb2, auth_pb2_grpc
from auth_service.api.server import AuthServer
from auth_service.config import Settings
from auth_service.local.embedded import EmbeddedPostgres
from tests.conftest import eventually, make_settings
from tests.helpers import ADMIN_MD, create_user, expect_status

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


async def _health(ch: grpc.aio.Channel, service: str) -> int:
    reply = await health_pb2_grpc.HealthStub(ch).Check(
        health_pb2.HealthCheckRequest(service=service), timeout=5
    )
    return int(reply.status)


async def _in_memory(srv: AuthServer, ch: grpc.aio.Channel, user_id: str) -> None:
    """Wait until the index is loaded and memory answers `user_id` (created through
    this replica, it may be stale in an index loaded before: one query puts it in
    the cache)."""
    feed = srv.user_changes
    assert feed is not None
    auth = auth_pb2_grpc.AuthServiceStub(ch)

    async def answered() -> bool:
        await auth.UserExists(auth_pb2.UserExistsRequest(user_id=user_id), timeout=5)
        cache = feed.cache
        return cache.enabled and cache.index is not None and cache.get(user_id) is not None

    await eventually(answered, timeout=20)


def _freeze(pg: EmbeddedPostgres) -> list[psutil.Process]:
    """SIGSTOP the postmaster and every backend (each is a session leader of its
    own, so signalling the postmaster's group would leave them running)."""
    postmaster = psutil.Process(pg._proc.pid)  # type: ignore[union-attr]
    frozen = [postmaster, *postmaster.children(recursive=True)]
    for proc in frozen:
        with contextlib.suppress(psutil.NoSuchProcess):  # a backend that just ended
            proc.send_signal(signal.SIGSTOP)
    return frozen


def _settings(url: str) -> Settings:
    return make_settings(url, state_index_max_users=1000, stall_timeout_ms=300)


async def test_memory_answers_are_not_refused_while_a_query_waits_on_a_lock(
    database_url: str,
) -> None:
    async with (
        AuthServer(_settings(database_url)) as srv,
        grpc.aio.insecure_channel(srv.address) as ch,
    ):
        auth = auth_pb2_grpc.AuthServiceStub(ch)
        alice = await create_user(admin_pb2_grpc.UserAdminServiceStub(ch))
        await _in_memory(srv, ch, alice.id)
        locker = await asyncpg.connect(database_url)
        try:
            tx = locker.transaction()
            await tx.start()
            await locker.execute("LOCK TABLE users IN ACCESS EXCLUSIVE MODE")
            stuck = asyncio.ensure_future(
                auth.GetUser(auth_pb2.GetUserRequest(user_id=alice.id), timeout=10)
            )

            async def stalled() -> bool:
                return srv.database.stalled()

            await eventually(stalled)  # the database has not answered for 0.3 s
            for _ in range(20):
                reply = await auth.UserExists(
                    auth_pb2.UserExistsRequest(user_id=alice.id), timeout=2
                )
                assert reply.state == auth_pb2.USER_STATE_ACTIVE
                batch = await auth.BatchUserExists(
                    auth_pb2.BatchUserExistsRequest(user_ids=[alice.id]), timeout=2
                )
                assert batch.results[0].exists
            # An id that needs a query is refused at once, with the reason.
            admin = admin_pb2_grpc.UserAdminServiceStub(ch)
            error = await expect_status(
                admin.CreateUser(
                    admin_pb2.CreateUserRequest(username=f"u_{uuid.uuid4().hex[:8]}"),
                    metadata=ADMIN_MD,
                    timeout=2,
                ),
                grpc.StatusCode.UNAVAILABLE,
            )
            assert "has not answered" in (error.details() or "")

            async def admin_out() -> bool:  # noticed within about 0.1 s of the stall
                return await _health(ch, "auth.v1.UserAdminService") == NOT_SERVING

            await eventually(admin_out)
            assert await _health(ch, "auth.v1.AuthService") == SERVING
            assert await _health(ch, "") == SERVING
            await tx.rollback()
        finally:
            await locker.close()
        assert (await stuck).user.id == alice.id  # the slow call finished too

        async def admin_back() -> bool:
            return await _health(ch, "auth.v1.UserAdminService") == SERVING

        await eventually(admin_back)


async def test_a_frozen_database_keeps_the_read_api_ready_while_memory_answers(
    private_postgres: EmbeddedPostgres,
) -> None:
    async with (
        AuthServer(_settings(private_postgres.url)) as srv,
        grpc.aio.insecure_channel(srv.address) as ch,
    ):
        auth = auth_pb2_grpc.AuthServiceStub(ch)
        alice = await create_user(admin_pb2_grpc.UserAdminServiceStub(ch))
        await _in_memory(srv, ch, alice.id)
        frozen = _freeze(private_postgres)
        try:

            async def admin_down() -> bool:
                return await _health(ch, "auth.v1.UserAdminService") == NOT_SERVING

            await eventually(admin_down, timeout=10)  # the health ping timed out
            assert await _health(ch, "auth.v1.AuthService") == SERVING
            reply = await auth.UserExists(auth_pb2.UserExistsRequest(user_id=alice.id), timeout=2)
            assert reply.state == auth_pb2.USER_STATE_ACTIVE
        finally:
            for proc in frozen:
                with contextlib.suppress(psutil.NoSuchProcess):
                    proc.send_signal(signal.SIGCONT)

        async def admin_back() -> bool:
            return await _health(ch, "auth.v1.UserAdminService") == SERVING

        await eventually(admin_back, timeout=20)
