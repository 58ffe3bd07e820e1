"""The server's spans, on a real server and database in this process: a SERVER span
per call that continues the caller's traceparent and names the caller and the
status; one query span per database query, linked to every call it answered; no
query span when the state cache answers; DeleteUser's trace stored with its outbox
row. And nothing of it while tracing is off."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import grpc
from opentelemetry.trace import SpanKind, StatusCode

from auth_client.contract import admin_pb2, auth_pb2, auth_pb2_grpc, parse_traceparent
from auth_service.api.server import AuthServer
from tests.conftest import eventually, make_settings
from tests.helpers import ADMIN_MD, create_user, delete_user
from tests.tracing.conftest import Spans, new_traceparent

USER_EXISTS = "auth.v1.AuthService/UserExists"


def _md(traceparent: str) -> tuple[tuple[str, str], ...]:
    return (*ADMIN_MD, ("traceparent", traceparent))


async def test_a_call_is_a_server_span_continuing_the_callers_trace(
    server_spans: Spans, server: AuthServer, auth_stub: auth_pb2_grpc.AuthServiceStub
) -> None:
    parent, trace_id, span_id = new_traceparent()
    await auth_stub.UserExists(
        auth_pb2.UserExistsRequest(user_id=str(uuid.uuid4())), metadata=_md(parent), timeout=10
    )
    bad_id = auth_stub.UserExists(auth_pb2.UserExistsRequest(user_id="nope"), metadata=ADMIN_MD)
    try:
        await bad_id
    except grpc.aio.AioRpcError as exc:
        assert exc.code() is grpc.StatusCode.INVALID_ARGUMENT

    call, refused = await server_spans.settled(USER_EXISTS, 2)
    assert call.kind is SpanKind.SERVER
    assert call.context.trace_id == trace_id
    assert call.parent is not None
    assert call.parent.span_id == span_id
    assert call.parent.is_remote
    attrs = dict(call.attributes or {})
    assert attrs["rpc.system"] == "grpc"
    assert attrs["rpc.service"] == "auth.v1.AuthService"
    assert attrs["rpc.method"] == "UserExists"
    assert attrs["auth.caller"] == "admin"
    assert attrs["rpc.grpc.status_code"] == 0
    (query,) = [s for s in server_spans.named("SELECT users") if s.parent == call.context]
    assert query.kind is SpanKind.CLIENT
    assert dict(query.attributes or {})["db.system.name"] == "postgresql"
    # A call without a traceparent starts a trace; an answer (not a failure) is no error.
    assert refused.parent is None
    assert dict(refused.attributes or {})["rpc.grpc.status_code"] == 3  # INVALID_ARGUMENT
    assert refused.status.status_code is not StatusCode.ERROR


async def test_a_shared_query_is_one_span_linked_to_every_call_it_answered(
    server_spans: Spans, database_url: str
) -> None:
    # One query at a time and no state cache: calls that arrive while a query runs
    # wait for the next one, which answers them all.
    settings = make_settings(database_url, lookup_concurrency=1, state_cache_size=0)
    async with AuthServer(settings) as srv, grpc.aio.insecure_channel(srv.address) as ch:
        stub = auth_pb2_grpc.AuthServiceStub(ch)
        callers = [new_traceparent() for _ in range(40)]
        await asyncio.gather(
            *(
                stub.UserExists(
                    auth_pb2.UserExistsRequest(user_id=str(uuid.uuid4())),
                    metadata=_md(tp),
                    timeout=10,
                )
                for tp, _, _ in callers
            )
        )
    calls = server_spans.named(USER_EXISTS)
    queries = server_spans.named("SELECT users")
    assert len(calls) == 40
    assert {c.context.trace_id for c in calls} == {t for _, t, _ in callers}
    linked = [(link.context.trace_id, link.context.span_id) for q in queries for link in q.links]
    # Every call is linked from exactly one query, and fewer queries than calls ran.
    assert sorted(linked) == sorted((c.context.trace_id, c.context.span_id) for c in calls)
    assert len(queries) < len(calls)
    for query in queries:
        first = query.links[0].context
        assert query.parent is not None
        assert (query.context.trace_id, query.parent.span_id) == (first.trace_id, first.span_id)
        assert dict(query.attributes or {})["auth.ids"] == len(query.links)


async def test_a_batch_is_one_query_span_and_the_state_cache_answers_without_one(
    server_spans: Spans, server: AuthServer, auth_stub, admin_stub
) -> None:
    assert server.user_changes is not None
    await eventually(lambda: asyncio.sleep(0, server.user_changes.listening))  # type: ignore[union-attr]
    cache = server.lookup.cache
    announced = cache.generation()
    users = [(await create_user(admin_stub)).id for _ in range(3)]
    # Each creation is forgotten twice: by this server at once, then when its
    # notification arrives. A query that starts between the two may not keep its
    # answers (state_cache.py), so the cache would not answer below: wait for both.
    await eventually(lambda: asyncio.sleep(0, cache.generation() >= announced + 6))
    server_spans.exporter.clear()

    await auth_stub.BatchUserExists(
        auth_pb2.BatchUserExistsRequest(user_ids=users), metadata=ADMIN_MD, timeout=10
    )
    batch = server_spans.one("auth.v1.AuthService/BatchUserExists")
    query = server_spans.one("SELECT users")
    assert query.parent == batch.context
    assert [link.context for link in query.links] == [batch.context]
    assert dict(query.attributes or {})["auth.ids"] == 3
    assert dict(batch.attributes or {})["auth.state_cache.hits"] == 0

    # Answered now from the state cache: no query, and the call says so.
    server_spans.exporter.clear()
    await auth_stub.UserExists(auth_pb2.UserExistsRequest(user_id=users[0]), metadata=ADMIN_MD)
    await auth_stub.BatchUserExists(
        auth_pb2.BatchUserExistsRequest(user_ids=users), metadata=ADMIN_MD, timeout=10
    )
    assert server_spans.named("SELECT users") == []
    assert dict(server_spans.one(USER_EXISTS).attributes or {})["auth.state_cache.hit"] is True
    batch = server_spans.one("auth.v1.AuthService/BatchUserExists")
    assert dict(batch.attributes or {})["auth.state_cache.hits"] == 3


async def _stored_traceparent(database_url: str, user_id: str) -> str | None:
    conn = await asyncpg.connect(database_url)
    try:
        value: str | None = await conn.fetchval(
            "SELECT traceparent FROM outbox WHERE partition_key = $1", user_id
        )
        return value
    finally:
        await conn.close()


async def test_delete_user_stores_its_trace_with_the_outbox_row(
    server_spans: Spans, server: AuthServer, admin_stub, database_url: str
) -> None:
    user = await create_user(admin_stub)
    parent, trace_id, _ = new_traceparent()
    await admin_stub.DeleteUser(
        admin_pb2.DeleteUserRequest(user_id=user.id), metadata=_md(parent), timeout=10
    )
    call = server_spans.one("auth.v1.UserAdminService/DeleteUser")
    transaction = server_spans.one("UPDATE users")
    assert transaction.parent == call.context
    assert call.context.trace_id == trace_id
    stored = parse_traceparent(await _stored_traceparent(database_url, user.id))
    # The event continues the trace from the transaction that wrote it.
    assert stored == (trace_id, transaction.context.span_id, 1)


async def test_nothing_is_traced_or_stored_while_tracing_is_off(
    server: AuthServer, auth_stub, admin_stub, database_url: str
) -> None:
    user = await create_user(admin_stub)
    parent, _, _ = new_traceparent()
    await auth_stub.UserExists(
        auth_pb2.UserExistsRequest(user_id=user.id), metadata=_md(parent), timeout=10
    )
    await admin_stub.DeleteUser(
        admin_pb2.DeleteUserRequest(user_id=user.id), metadata=_md(parent), timeout=10
    )
    await delete_user(admin_stub, user.id)  # idempotent, still nothing
    assert await _stored_traceparent(database_url, user.id) is None
