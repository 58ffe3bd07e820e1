"""PostgreSQL stopped (`-m fast`, as a failover does) and started again while calls of
every kind are in flight: each call is answered by the service, never INTERNAL.

A fast shutdown cuts connections in the middle of a query, a transaction or a
connection reset; asyncpg then raises whatever state it was in (connection lost,
`InternalClientError: cannot switch to state ...`). All of it means "the database
went away" and must reach the caller as UNAVAILABLE, which clients retry.
"""

from __future__ import annotations

import asyncio
import collections
import uuid

import grpc
import pytest

from auth_client.contract import admin_pb2, admin_pb2_grpc, auth_pb2, auth_pb2_grpc
from auth_service.api.server import AuthServer
from auth_service.local.embedded import EmbeddedPostgres
from tests.conftest import eventually, make_settings
from tests.helpers import ADMIN_MD

pytestmark = pytest.mark.slow

# What a restart may answer: the work was done, the database was away, or the
# call's own deadline passed while it was.
_ALLOWED = {
    grpc.StatusCode.OK,
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.NOT_FOUND,  # DeleteUser of a user whose creation did not commit
}


async def _load(ch: grpc.aio.Channel, stop: asyncio.Event, codes: collections.Counter[str]) -> None:
    auth = auth_pb2_grpc.AuthServiceStub(ch)
    admin = admin_pb2_grpc.UserAdminServiceStub(ch)

    async def one() -> None:
        reply = await admin.CreateUser(
            admin_pb2.CreateUserRequest(username=f"u_{uuid.uuid4().hex[:12]}"),
            metadata=ADMIN_MD,
            timeout=3,
        )
        await auth.UserExists(auth_pb2.UserExistsRequest(user_id=reply.user.id), timeout=3)
        await auth.BatchUserExists(
            auth_pb2.BatchUserExistsRequest(user_ids=[reply.user.id, str(uuid.uuid4())]),
            timeout=3,
        )
        await admin.DeleteUser(
            admin_pb2.DeleteUserRequest(user_id=reply.user.id), metadata=ADMIN_MD, timeout=3
        )

    while not stop.is_set():
        try:
            await one()
            codes["OK"] += 1
        except grpc.aio.AioRpcError as exc:
            codes[exc.code().name] += 1
            if exc.code() not in _ALLOWED:
                codes[f"{exc.code().name}: {exc.details()}"] += 1
            await asyncio.sleep(0.005)


async def _progress(codes: collections.Counter[str]) -> None:
    """Wait until 20 more rounds of calls have succeeded."""
    done = codes["OK"]

    async def more() -> bool:
        return codes["OK"] >= done + 20

    await eventually(more, timeout=30)


async def test_calls_during_fast_database_restarts_are_never_internal(
    private_postgres: EmbeddedPostgres,
) -> None:
    settings = make_settings(
        private_postgres.url, pool_max_size=8, pool_min_size=4, state_cache_size=0
    )
    codes: collections.Counter[str] = collections.Counter()
    async with AuthServer(settings) as srv, grpc.aio.insecure_channel(srv.address) as ch:
        stop = asyncio.Event()
        workers = [asyncio.create_task(_load(ch, stop, codes)) for _ in range(12)]
        try:
            for _ in range(6):
                await _progress(codes)
                await asyncio.to_thread(private_postgres.stop, fast=True)
                await asyncio.sleep(0.2)  # calls meet the stopped database too
                await asyncio.to_thread(private_postgres.start)
            await _progress(codes)  # and it recovered by itself
        finally:
            stop.set()
            await asyncio.gather(*workers)
    refused = {
        name: n for name, n in codes.items() if name.split(":")[0] not in {c.name for c in _ALLOWED}
    }
    assert not refused, (
        f"answers other than OK/UNAVAILABLE/DEADLINE_EXCEEDED: {refused} (all: {codes})"
    )
    assert codes["UNAVAILABLE"] > 0, codes  # the restarts were really met by calls
