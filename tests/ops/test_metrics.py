"""The /metrics endpoint of a real server after real calls: per-method counters by
status code and caller, latency histograms, pool gauges, the relay's outbox metrics.

Counters are process-wide (several servers run in one test process), so each test
compares a scrape before and after its calls, and uses caller names of its own.
"""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request
import uuid

import asyncpg
import grpc
import pytest
from prometheus_client import REGISTRY, generate_latest

from auth_client.contract import admin_pb2, admin_pb2_grpc, auth_pb2, auth_pb2_grpc
from auth_service.api.grpc_server import ServerStartError
from auth_service.api.metrics import LATENCY_BUCKETS, method_metrics
from auth_service.api.server import AuthServer
from auth_service.config.tokens import parse_tokens
from auth_service.local.embedded import free_port
from tests.conftest import make_settings
from tests.helpers import ADMIN_MD, expect_status
from tests.ops.support import delta, parse, samples, value

AUTH = "auth.v1.AuthService"
ADMIN = "auth.v1.UserAdminService"


def _caller() -> tuple[str, str]:
    name = f"svc-{uuid.uuid4().hex[:8]}"
    return name, f"tok-{uuid.uuid4().hex}"


async def test_counters_and_histograms_by_method_code_and_caller(database_url: str) -> None:
    caller, token = _caller()
    settings = make_settings(
        database_url,
        metrics_listen="127.0.0.1:0",
        allow_unauthenticated_reads=False,
        auth_tokens=tuple(parse_tokens(f"{caller} users:read {token}")),
    )
    md = (("authorization", f"Bearer {token}"),)
    async with AuthServer(settings) as server:
        assert server.metrics is not None
        url = server.metrics.url
        before = await samples(url)
        async with grpc.aio.insecure_channel(server.address) as channel:
            reads = auth_pb2_grpc.AuthServiceStub(channel)
            admin = admin_pb2_grpc.UserAdminServiceStub(channel)
            created = await admin.CreateUser(
                admin_pb2.CreateUserRequest(username=f"u{uuid.uuid4().hex[:8]}"),
                metadata=ADMIN_MD,
                timeout=10,
            )
            user_id = created.user.id
            for _ in range(3):
                reply = await reads.UserExists(
                    auth_pb2.UserExistsRequest(user_id=user_id), metadata=md, timeout=10
                )
                assert reply.exists
            await expect_status(
                reads.GetUser(
                    auth_pb2.GetUserRequest(user_id=str(uuid.uuid4())), metadata=md, timeout=10
                ),
                grpc.StatusCode.NOT_FOUND,
            )
            await expect_status(
                reads.UserExists(
                    auth_pb2.UserExistsRequest(user_id="not-a-uuid"), metadata=md, timeout=10
                ),
                grpc.StatusCode.INVALID_ARGUMENT,
            )
            await expect_status(
                admin.DeleteUser(
                    admin_pb2.DeleteUserRequest(user_id=user_id),
                    metadata=(("authorization", "Bearer wrong-token-0123456789abcdef"),),
                    timeout=10,
                ),
                grpc.StatusCode.UNAUTHENTICATED,
            )
        after = await samples(url)

    def handled(method: str, code: str, who: str, service: str = AUTH) -> float:
        return delta(
            before,
            after,
            "grpc_server_handled_total",
            grpc_type="unary",
            grpc_service=service,
            grpc_method=method,
            grpc_code=code,
            caller=who,
        )

    # grpc_code spelled as go-grpc-middleware's provider spells it (Go's codes).
    assert handled("UserExists", "OK", caller) == 3
    assert handled("GetUser", "NotFound", caller) == 1
    assert handled("UserExists", "InvalidArgument", caller) == 1
    assert handled("CreateUser", "OK", "admin", ADMIN) == 1
    # An unknown token is nobody: counted under "anonymous", never the token.
    assert handled("DeleteUser", "Unauthenticated", "anonymous", ADMIN) == 1
    started = {"grpc_type": "unary", "grpc_service": AUTH, "grpc_method": "UserExists"}
    assert delta(before, after, "grpc_server_started_total", **started) == 4
    # The same labels on started and handled (caller included), and messages counted.
    mine = {**started, "caller": caller}
    assert delta(before, after, "grpc_server_started_total", **mine) == 4
    assert delta(before, after, "grpc_server_handled_total", **mine) == 4
    assert delta(before, after, "grpc_server_msg_received_total", **mine) == 4
    assert delta(before, after, "grpc_server_msg_sent_total", **mine) == 3  # OK answers only
    for family in ("started", "msg_received", "msg_sent"):
        for name, labels in after:
            if name == f"grpc_server_{family}_total":
                assert {key for key, _ in labels} == {*started, "caller"}

    latency = {**started, "caller": caller}
    assert delta(before, after, "grpc_server_handling_seconds_count", **latency) == 4
    assert delta(before, after, "grpc_server_handling_seconds_bucket", le="+Inf", **latency) == 4
    assert value(after, "grpc_server_handling_seconds_sum", **latency) > 0
    buckets = {
        float(dict(labels)["le"])
        for (name, labels) in after
        if name == "grpc_server_handling_seconds_bucket" and ("caller", caller) in labels
    }
    assert buckets == {*LATENCY_BUCKETS, float("inf")}

    # The pool gauges read the live pool; outbox metrics come from the relay module.
    assert value(after, "db_pool_max_size") == settings.pool_max_size
    assert 1 <= value(after, "db_pool_size") <= settings.pool_max_size
    assert value(after, "db_pool_in_use") + value(after, "db_pool_idle") == value(
        after, "db_pool_size"
    )
    for name in (
        "outbox_unpublished_rows",
        "outbox_oldest_unpublished_age_seconds",
        "outbox_events_published_total",
        "outbox_events_failed_total",
    ):
        assert any(n == name for n, _ in after), name
    # No caller token appears on the endpoint.
    assert token not in str(after)


async def test_metrics_are_off_unless_configured(database_url: str) -> None:
    caller, token = _caller()
    settings = make_settings(
        database_url, auth_tokens=tuple(parse_tokens(f"{caller} users:read {token}"))
    )
    async with (
        AuthServer(settings) as quiet,
        AuthServer(make_settings(database_url, metrics_listen="127.0.0.1:0")) as scraped,
    ):
        assert quiet.metrics is None
        assert scraped.metrics is not None
        async with grpc.aio.insecure_channel(quiet.address) as channel:
            await auth_pb2_grpc.AuthServiceStub(channel).UserExists(
                auth_pb2.UserExistsRequest(user_id=str(uuid.uuid4())),
                metadata=(("authorization", f"Bearer {token}"),),
                timeout=10,
            )
        found = await samples(scraped.metrics.url)
    # The server without metrics recorded nothing for its caller.
    assert value(found, "grpc_server_handled_total", caller=caller) == 0


async def test_only_metrics_path_is_served(database_url: str) -> None:
    async with AuthServer(make_settings(database_url, metrics_listen="127.0.0.1:0")) as server:
        assert server.metrics is not None
        base = f"http://{server.metrics.address}"

        def status(path: str, method: str = "GET") -> int:
            request = urllib.request.Request(base + path, method=method)
            try:
                with urllib.request.urlopen(request, timeout=10) as reply:
                    return int(reply.status)
            except urllib.error.HTTPError as exc:
                return exc.code

        assert await asyncio.to_thread(status, "/metrics") == 200
        assert await asyncio.to_thread(status, "/metrics", "HEAD") == 200
        assert await asyncio.to_thread(status, "/") == 404
        assert await asyncio.to_thread(status, "/metrics", "POST") == 405


async def test_taken_metrics_port_fails_start(database_url: str) -> None:
    port = free_port()
    async with AuthServer(make_settings(database_url, metrics_listen=f"127.0.0.1:{port}")):
        with pytest.raises(ServerStartError, match="metrics"):
            async with AuthServer(make_settings(database_url, metrics_listen=f"127.0.0.1:{port}")):
                pass


def test_histogram_buckets_are_cumulative_le_buckets() -> None:
    """The hand-rolled exposition follows Prometheus histogram semantics: a value on
    a bound counts in that `le` bucket, buckets are cumulative, +Inf = count."""
    service = f"unit.v1.S{uuid.uuid4().hex[:6]}"
    site = method_metrics(service, "M")
    site.start("c")
    site.start("c")
    site.done("c", grpc.StatusCode.OK, 0.001)  # exactly on a bound
    site.done("c", grpc.StatusCode.NOT_FOUND, 42.0)  # beyond the last bound
    found = parse(generate_latest(REGISTRY).decode())
    labels = {"grpc_service": service, "grpc_method": "M", "caller": "c"}
    assert value(found, "grpc_server_started_total", grpc_service=service) == 2
    assert value(found, "grpc_server_handling_seconds_bucket", le="0.0005", **labels) == 0
    assert value(found, "grpc_server_handling_seconds_bucket", le="0.001", **labels) == 1
    assert value(found, "grpc_server_handling_seconds_bucket", le="10.0", **labels) == 1
    assert value(found, "grpc_server_handling_seconds_bucket", le="+Inf", **labels) == 2
    assert value(found, "grpc_server_handling_seconds_count", **labels) == 2
    assert value(found, "grpc_server_handling_seconds_sum", **labels) == 42.001
    assert value(found, "grpc_server_handled_total", grpc_code="NotFound", **labels) == 1


async def test_calls_refused_before_the_handler_are_counted(database_url: str) -> None:
    """Too big for MAX_REQUEST_BYTES, or over the caller's in-flight bound: still
    one started and one handled (ResourceExhausted) each, under the caller."""
    caller, token = _caller()
    settings = make_settings(
        database_url,
        metrics_listen="127.0.0.1:0",
        allow_unauthenticated_reads=False,
        auth_tokens=tuple(parse_tokens(f"{caller} users:read {token}")),
        max_request_bytes=40_000,
        max_concurrent_rpcs=2,
        max_concurrent_rpcs_per_caller=1,
    )
    md = (("authorization", f"Bearer {token}"),)
    async with AuthServer(settings) as server:
        assert server.metrics is not None
        before = await samples(server.metrics.url)
        async with grpc.aio.insecure_channel(server.address) as channel:
            reads = auth_pb2_grpc.AuthServiceStub(channel)
            big = auth_pb2.BatchUserExistsRequest(user_ids=[str(uuid.uuid4())] * 1100)
            assert big.ByteSize() > 40_000
            await expect_status(
                reads.BatchUserExists(big, metadata=md, timeout=10),
                grpc.StatusCode.RESOURCE_EXHAUSTED,
            )
        after = await samples(server.metrics.url)
        # A configured caller's series exist before its first call.
        other = value(
            before,
            "grpc_server_handled_total",
            grpc_method="GetUser",
            grpc_code="OK",
            caller=caller,
        )
        assert other == 0
        assert ("grpc_server_handled_total", frozenset(
            {"grpc_type": "unary", "grpc_service": AUTH, "grpc_method": "GetUser",
             "grpc_code": "OK", "caller": caller}.items()
        )) in before  # fmt: skip
    labels = {"grpc_method": "BatchUserExists", "caller": caller}
    assert delta(before, after, "grpc_server_started_total", **labels) == 1
    assert (
        delta(before, after, "grpc_server_handled_total", grpc_code="ResourceExhausted", **labels)
        == 1
    )


async def test_state_cache_and_merged_lookups_are_counted(database_url: str) -> None:
    """The dashboard's "Reads" row: ids answered from the state cache vs ids that
    went to the database, the queries they took, and the cache's size and state."""
    settings = make_settings(database_url, metrics_listen="127.0.0.1:0")
    # Users created before the server starts: no change notification can race the
    # cache in this test (NOT_FOUND is never kept in memory, so they must exist).
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(
            "INSERT INTO users (id, username, display_name)"
            " VALUES ($1::uuid, 'first', 'f'), ($2::uuid, 'second', 's')",
            first,
            second,
        )
    finally:
        await conn.close()
    async with AuthServer(settings) as server:
        assert server.metrics is not None
        url = server.metrics.url
        before = await samples(url)
        async with grpc.aio.insecure_channel(server.address) as channel:
            reads = auth_pb2_grpc.AuthServiceStub(channel)
            for _ in range(3):  # a query, then two answers from memory
                reply = await reads.UserExists(
                    auth_pb2.UserExistsRequest(user_id=first), timeout=10
                )
                assert reply.state == auth_pb2.USER_STATE_ACTIVE
            batch = await reads.BatchUserExists(  # one from memory, one query
                auth_pb2.BatchUserExistsRequest(user_ids=[first, second]), timeout=10
            )
            assert [r.exists for r in batch.results] == [True, True]
        after = await samples(url)

    assert delta(before, after, "auth_state_cache_hits_total") == 3
    assert delta(before, after, "auth_lookup_lookups_total") == 2
    assert delta(before, after, "auth_lookup_queries_total") == 2
    assert delta(before, after, "auth_lookup_windows_total") == 0  # one call at a time
    assert value(after, "auth_state_cache_enabled") == 1
    assert value(after, "auth_state_cache_entries") == 2
