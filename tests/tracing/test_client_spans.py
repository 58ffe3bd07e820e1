"""auth_client's spans when the application traces (a global tracer provider), on a
real server in this process: one span per lookup with cache, coalescing, batch and
breaker attributes; a CLIENT span per RPC carrying the traceparent the server
continues; and, while the application does not trace, nothing at all: no span, no
metadata, and a client that works without the OpenTelemetry API installed."""

from __future__ import annotations

import asyncio
import os
import sys
import textwrap
import uuid
from typing import Any

import grpc
from opentelemetry import trace
from opentelemetry.trace import SpanKind

from auth_client import AuthClient
from auth_service.api.server import AuthServer
from tests.helpers import ADMIN_TOKEN, create_user
from tests.tracing.conftest import Spans


class MetadataSeen(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    def __init__(self) -> None:
        self.keys: list[set[str]] = []

    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        self.keys.append({key for key, _ in details.metadata or ()})
        return await continuation(details, request)


async def test_a_lookup_is_one_trace_from_the_application_to_the_database(
    app_spans: Spans, server: AuthServer, admin_stub
) -> None:
    user = (await create_user(admin_stub)).id
    app = trace.get_tracer("a service")
    app_spans.exporter.clear()
    async with AuthClient(server.address, token=ADMIN_TOKEN) as auth:
        with app.start_as_current_span("insert group member") as insert:
            await auth.require_user(user)
        with app.start_as_current_span("insert again"):
            await auth.require_user(user)  # a cache hit: still a span, no RPC

    first, hit = app_spans.named("auth_client.lookup")
    assert first.parent == insert.get_span_context()
    attrs = dict(first.attributes or {})
    assert attrs["auth_client.cache.hit"] is False
    assert attrs["auth_client.coalesced"] == 0
    assert attrs["auth_client.batch.size"] == 1
    assert attrs["auth_client.breaker.state"] == "closed"
    rpc = app_spans.one("auth.v1.AuthService/UserExists", SpanKind.CLIENT)
    call = app_spans.one("auth.v1.AuthService/UserExists", SpanKind.SERVER)
    query = app_spans.one("SELECT users")
    assert rpc.parent == first.context
    assert call.parent is not None  # from the traceparent in the call's metadata
    assert (call.parent.trace_id, call.parent.span_id) == (
        rpc.context.trace_id,
        rpc.context.span_id,
    )
    assert query.parent == call.context
    assert len({s.context.trace_id for s in (insert, first, rpc, call, query)}) == 1
    assert dict(hit.attributes or {})["auth_client.cache.hit"] is True
    assert [s for s in app_spans.all() if s.parent == hit.context] == []


async def test_lookups_sharing_an_rpc_are_linked_from_it(
    app_spans: Spans, server: AuthServer
) -> None:
    ids = [uuid.uuid4() for _ in range(5)]
    app = trace.get_tracer("a service")

    async def lookup(user_id: uuid.UUID) -> bool:
        with app.start_as_current_span("handle request"):
            return await auth.user_exists(user_id)

    async with AuthClient(server.address, token=ADMIN_TOKEN) as auth:
        await asyncio.gather(*(lookup(i) for i in [*ids, ids[0]]))

    lookups = app_spans.named("auth_client.lookup")
    rpc = app_spans.one("auth.v1.AuthService/BatchUserExists", SpanKind.CLIENT)
    linked = {link.context.span_id for link in rpc.links}
    assert linked == {s.context.span_id for s in lookups}  # the coalesced one too
    assert rpc.parent is not None
    assert rpc.parent.span_id in linked
    assert sorted(dict(s.attributes or {})["auth_client.coalesced"] for s in lookups) == [
        0,
        0,
        0,
        0,
        0,
        1,
    ]
    assert {dict(s.attributes or {})["auth_client.batch.size"] for s in lookups} == {5}


async def test_without_a_tracer_provider_nothing_is_recorded_or_sent(server: AuthServer) -> None:
    seen = MetadataSeen()
    user = uuid.uuid4()
    async with AuthClient(server.address, token=ADMIN_TOKEN, interceptors=[seen]) as auth:
        assert await auth.user_exists(user) is False
        await asyncio.gather(*(auth.user_exists(uuid.uuid4()) for _ in range(3)))
        assert await auth.get_user(user) is None
    assert seen.keys
    assert all("traceparent" not in keys for keys in seen.keys)


async def test_the_client_works_without_the_opentelemetry_api(server: AuthServer) -> None:
    code = textwrap.dedent(
        """
        import asyncio, sys, uuid
        sys.modules["opentelemetry"] = None  # as if the extra were not installed
        from auth_client import AuthClient

        async def main():
            async with AuthClient(sys.argv[1], token=sys.argv[2]) as auth:
                assert await auth.user_exists(uuid.uuid4()) is False
                assert await auth.user_exists(uuid.uuid4()) is False
            print("ok")

        asyncio.run(main())
        """
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        code,
        server.address,
        ADMIN_TOKEN,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ},
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    assert out.decode().strip() == "ok"
