"""Concurrent UserExists calls share database queries, and each caller still gets
its own answer (the server-side fast path, auth_service/store/lookup.py)."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import grpc

from auth_client.contract import auth_pb2, auth_pb2_grpc
from auth_service.api.server import AuthServer
from tests.conftest import eventually, make_settings
from tests.helpers import create_user, delete_user


async def test_concurrent_lookups_share_queries_and_answer_each_caller(
    server, auth_stub, admin_stub
) -> None:
    alive = [await create_user(admin_stub) for _ in range(5)]
    gone = [await create_user(admin_stub) for _ in range(5)]
    for user in gone:
        await delete_user(admin_stub, user.id)
    expected = {u.id: auth_pb2.USER_STATE_ACTIVE for u in alive}
    expected |= {u.id: auth_pb2.USER_STATE_DELETED for u in gone}
    expected |= {str(uuid.uuid4()): auth_pb2.USER_STATE_NOT_FOUND for _ in range(10)}
    asked = list(expected) * 5  # 100 calls (under the per-caller in-flight bound)
    lookup = server._lookup
    before = (lookup.batches, lookup.lookups)

    replies = await asyncio.gather(
        *(auth_stub.UserExists(auth_pb2.UserExistsRequest(user_id=i), timeout=20) for i in asked)
    )

    assert [r.state for r in replies] == [expected[i] for i in asked]
    assert [r.exists for r in replies] == [expected[i] == auth_pb2.USER_STATE_ACTIVE for i in asked]
    batches = lookup.batches - before[0]
    lookups = lookup.lookups - before[1]  # the rest were answered from the state cache
    assert 0 < lookups <= len(asked)
    assert batches < lookups  # queries were shared


async def test_cancelled_callers_do_not_fail_the_others(server, auth_stub, admin_stub) -> None:
    user = await create_user(admin_stub)
    blocker = await asyncpg.connect(server.settings.database_url)
    try:
        tx = blocker.transaction()
        await tx.start()
        await blocker.execute("LOCK TABLE users IN ACCESS EXCLUSIVE MODE")
        request = auth_pb2.UserExistsRequest(user_id=user.id)
        patient = [
            asyncio.ensure_future(auth_stub.UserExists(request, timeout=20)) for _ in range(10)
        ]
        hasty = [
            asyncio.ensure_future(auth_stub.UserExists(request, timeout=0.3)) for _ in range(10)
        ]
        hasty_results = await asyncio.gather(*hasty, return_exceptions=True)
        assert all(
            isinstance(r, grpc.aio.AioRpcError) and r.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            for r in hasty_results
        )
        for call in patient[:3]:
            call.cancel()
        await tx.rollback()
        answers = await asyncio.gather(*patient[3:])
        assert all(a.exists for a in answers)
    finally:
        await blocker.close()


async def test_a_quiet_server_never_waits_for_company(database_url: str) -> None:
    """Lookups that arrive one at a time go out at once, even with a long window."""
    settings = make_settings(database_url, lookup_window_ms=500.0)
    async with AuthServer(settings) as srv, grpc.aio.insecure_channel(srv.address) as ch:
        stub = auth_pb2_grpc.AuthServiceStub(ch)
        loop = asyncio.get_running_loop()
        lookup = srv._lookup
        assert lookup is not None

        async def quiet() -> bool:
            """No lookup queued, in a query, or waiting for a collection window."""
            return lookup.idle()

        for _ in range(5):
            await eventually(quiet)  # each lookup arrives alone at a quiet server
            # A new id each time: the state cache would answer a repeated one.
            request = auth_pb2.UserExistsRequest(user_id=str(uuid.uuid4()))
            started = loop.time()
            reply = await stub.UserExists(request, timeout=5)
            assert reply.state == auth_pb2.USER_STATE_NOT_FOUND
            assert loop.time() - started < 0.45  # not held for the 500 ms window
        assert lookup.windows == 0  # no lookup waited for company
        assert lookup.batches == lookup.lookups == 5
