"""Limits against a real server: request size, batch cap, concurrency bound (global
and per caller) and per-caller rate limit, each answering at once."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from typing import TYPE_CHECKING

import asyncpg
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from auth_client.contract import auth_pb2, auth_pb2_grpc
from auth_service.api.limits import Limits
from auth_service.api.server import AuthServer
from auth_service.config import MIN_REQUEST_BYTES
from auth_service.errors import ResourceExhaustedError
from tests.conftest import eventually
from tests.helpers import expect_status
from tests.security.conftest import OTHER_READER, READER, md, secure_settings

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

SOME_ID = "00000000-0000-4000-8000-000000000000"
EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED


# --- unit: the admission arithmetic, with a clock switch -------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_token_bucket_refills_at_the_rate_up_to_the_burst() -> None:
    clock = Clock()
    limits = Limits(rate_per_s=2, burst=3, clock=clock)
    for _ in range(3):
        limits.admit("a")
        limits.release("a")
    with pytest.raises(ResourceExhaustedError, match="rate limit"):
        limits.admit("a")
    limits.admit("b")  # buckets are per caller
    limits.release("b")
    clock.now += 0.5  # one token back
    limits.admit("a")
    limits.release("a")
    with pytest.raises(ResourceExhaustedError):
        limits.admit("a")
    clock.now += 60  # never more than the burst
    for _ in range(3):
        limits.admit("a")
        limits.release("a")
    with pytest.raises(ResourceExhaustedError):
        limits.admit("a")


def test_concurrency_bounds_and_release() -> None:
    limits = Limits(max_in_flight=3, max_in_flight_per_caller=2)
    limits.admit("a")
    limits.admit("a")
    with pytest.raises(ResourceExhaustedError, match="caller a"):
        limits.admit("a")
    limits.admit("b")
    with pytest.raises(ResourceExhaustedError, match="server busy"):
        limits.admit("c")
    limits.release("a")
    limits.admit("c")
    assert limits.in_flight == 3
    assert limits.in_flight_of("a") == 1
    # A rejected call consumed nothing.
    assert Limits().in_flight == 0


# --- real server ------------------------------------------------------------------


@contextlib.asynccontextmanager
async def users_table_locked(database_url: str) -> AsyncIterator[None]:
    """Hold an ACCESS EXCLUSIVE lock on users: every read blocks until released, so
    calls stay in flight as long as the test needs."""
    conn = await asyncpg.connect(database_url)
    try:
        tx = conn.transaction()
        await tx.start()
        await conn.execute("LOCK TABLE users IN ACCESS EXCLUSIVE MODE")
        try:
            yield
        finally:
            await tx.rollback()
    finally:
        await conn.close()


async def outcome(call: object) -> grpc.StatusCode:
    try:
        await call  # type: ignore[misc]
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


@pytest.fixture
async def limited(database_url: str) -> AsyncIterator[tuple[AuthServer, grpc.aio.Channel]]:
    settings = secure_settings(
        database_url,
        max_concurrent_rpcs=10,
        max_concurrent_rpcs_per_caller=6,
        statement_timeout_ms=60_000,
        # The locked table only holds calls in flight here; the stall check (which
        # would rightly blame the database, see the hung-database test) is off.
        stall_timeout_ms=0,
        # Every admitted call can hold a connection and health still gets one;
        # opened at start so no call waits for a new connection on a busy machine.
        pool_max_size=12,
        pool_min_size=11,
        connect_timeout_s=10.0,
    )
    async with AuthServer(settings) as srv, grpc.aio.insecure_channel(srv.address) as ch:
        yield srv, ch


async def test_flood_past_the_bound_is_refused_at_once_and_others_still_answered(
    limited: tuple[AuthServer, grpc.aio.Channel], database_url: str
) -> None:
    srv, ch = limited
    auth = auth_pb2_grpc.AuthServiceStub(ch)
    assert srv.path is not None
    limits = srv.admission.limits

    def exists(token: str) -> asyncio.Task[grpc.StatusCode]:
        request = auth_pb2.UserExistsRequest(user_id=SOME_ID)
        return asyncio.ensure_future(
            outcome(auth.UserExists(request, metadata=md(token), timeout=60))
        )

    async with users_table_locked(database_url):
        flood = [exists(READER) for _ in range(60)]
        # While the database holds every admitted call, the rest are answered:
        # RESOURCE_EXHAUSTED at once, not queued behind the lock.
        await eventually(lambda: _count_done(flood, 60 - 6), timeout=30)
        assert limits.in_flight_of("messaging") == 6
        refused = [t.result() for t in flood if t.done()]
        assert refused == [EXHAUSTED] * (60 - 6)

        # A well-behaved caller still gets in: the noisy one holds only its share.
        polite = [exists(OTHER_READER) for _ in range(3)]
        await eventually(lambda: _is_true(limits.in_flight == 9))
        # Health is never limited.
        health = health_pb2_grpc.HealthStub(ch)
        reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=10)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        # The global bound: 10 in flight at most, whoever asks.
        extra = [exists(OTHER_READER) for _ in range(3)]
        await eventually(lambda: _count_done(extra, 2), timeout=30)
        assert [t.result() for t in extra if t.done()] == [EXHAUSTED] * 2
    # The lock is gone: every admitted call completes normally.
    early = [t.result() for t in (*polite, *extra) if t.done()]
    assert early == [EXHAUSTED] * 2, early
    admitted = [t for t in (*flood, *polite, *extra) if not t.done()]
    assert len(admitted) == 10
    assert await asyncio.gather(*admitted) == [grpc.StatusCode.OK] * 10
    assert limits.in_flight == 0


async def test_a_database_that_stops_answering_is_unavailable_not_the_callers_fault(
    database_url: str,
) -> None:
    """Calls waiting on a database that does not answer fill the caller's share:
    what is refused then is UNAVAILABLE (the database), not RESOURCE_EXHAUSTED (the
    caller), and health turns NOT_SERVING within about the stall timeout."""
    settings = secure_settings(
        database_url,
        max_concurrent_rpcs=10,
        max_concurrent_rpcs_per_caller=6,
        statement_timeout_ms=60_000,
        stall_timeout_ms=300,
        pool_max_size=12,
        pool_min_size=11,
        connect_timeout_s=10.0,
        health_interval_s=0.5,
    )
    async with AuthServer(settings) as srv, grpc.aio.insecure_channel(srv.address) as ch:
        auth = auth_pb2_grpc.AuthServiceStub(ch)
        health = health_pb2_grpc.HealthStub(ch)

        def exists(token: str) -> asyncio.Task[grpc.StatusCode]:
            request = auth_pb2.UserExistsRequest(user_id=SOME_ID)
            return asyncio.ensure_future(
                outcome(auth.UserExists(request, metadata=md(token), timeout=60))
            )

        async with users_table_locked(database_url):
            waiting = [exists(READER) for _ in range(6)]  # the caller's whole share
            await asyncio.sleep(0.1)  # the database has not answered for a while
            flood = [exists(READER) for _ in range(30)]
            await eventually(lambda: _count_done(flood, 30), timeout=30)
            assert {t.result() for t in flood} == {grpc.StatusCode.UNAVAILABLE}
            loop = asyncio.get_running_loop()
            started = loop.time()

            async def not_serving() -> bool:
                reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=10)
                return reply.status == health_pb2.HealthCheckResponse.NOT_SERVING

            await eventually(not_serving, timeout=10, interval=0.02)
            assert loop.time() - started < 1.5  # not the next ping's timeout
            later = exists(OTHER_READER)  # everyone: fast UNAVAILABLE, nothing queues
            assert await asyncio.wait_for(later, 5) == grpc.StatusCode.UNAVAILABLE
        # The lock is gone: the calls that were waiting complete, health recovers.
        assert await asyncio.gather(*waiting) == [grpc.StatusCode.OK] * 6

        async def serving() -> bool:
            reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=10)
            return reply.status == health_pb2.HealthCheckResponse.SERVING

        await eventually(serving, timeout=10)
        assert await exists(OTHER_READER) == grpc.StatusCode.OK


async def _count_done(tasks: list[asyncio.Task[grpc.StatusCode]], n: int) -> bool:
    return sum(t.done() for t in tasks) >= n


async def _is_true(value: bool) -> bool:
    return value


async def test_cancelled_calls_free_their_slot(
    limited: tuple[AuthServer, grpc.aio.Channel], database_url: str
) -> None:
    srv, ch = limited
    assert srv.path is not None
    auth = auth_pb2_grpc.AuthServiceStub(ch)
    async with users_table_locked(database_url):
        calls = [
            auth.UserExists(
                auth_pb2.UserExistsRequest(user_id=SOME_ID), metadata=md(READER), timeout=60
            )
            for _ in range(6)
        ]
        await eventually(lambda: _is_true(srv.admission.limits.in_flight == 6))  # type: ignore[union-attr]
        for c in calls:
            c.cancel()
        await eventually(lambda: _is_true(srv.admission.limits.in_flight == 0))  # type: ignore[union-attr]


async def test_rate_limit_per_caller(database_url: str) -> None:
    # 3 calls, then one per 100 s: robust on a loaded machine.
    settings = secure_settings(database_url, rate_limit_rps=0.01, rate_limit_burst=3)
    async with AuthServer(settings) as srv, grpc.aio.insecure_channel(srv.address) as ch:
        auth = auth_pb2_grpc.AuthServiceStub(ch)

        def exists(token: str) -> object:
            request = auth_pb2.UserExistsRequest(user_id=SOME_ID)
            return auth.UserExists(request, metadata=md(token), timeout=10)

        for _ in range(3):
            await exists(READER)  # type: ignore[misc]
        err = await expect_status(exists(READER), EXHAUSTED)
        assert "messaging" in (err.details() or "")
        assert "rate limit" in (err.details() or "")
        # Another caller has its own bucket.
        await exists(OTHER_READER)  # type: ignore[misc]
        # Unauthenticated calls do not drain anyone's bucket.
        await expect_status(
            auth.UserExists(auth_pb2.UserExistsRequest(user_id=SOME_ID), timeout=10),
            grpc.StatusCode.UNAUTHENTICATED,
        )


def _ids(n: int) -> list[str]:
    return [str(uuid.uuid4()) for _ in range(n)]


async def test_request_size_limit_admits_a_full_batch(database_url: str) -> None:
    """At the smallest allowed MAX_REQUEST_BYTES a 1000-id batch still fits; 1001 ids
    are INVALID_ARGUMENT (the batch cap); anything bigger than the limit is
    RESOURCE_EXHAUSTED before it is parsed."""
    settings = secure_settings(database_url, max_request_bytes=MIN_REQUEST_BYTES)
    async with AuthServer(settings) as srv, grpc.aio.insecure_channel(srv.address) as ch:
        auth = auth_pb2_grpc.AuthServiceStub(ch)
        full = auth_pb2.BatchUserExistsRequest(user_ids=[i.upper() for i in _ids(1000)])
        assert full.ByteSize() == MIN_REQUEST_BYTES
        reply = await auth.BatchUserExists(full, metadata=md(READER), timeout=30)
        assert len(reply.results) == 1000
        over = auth_pb2.BatchUserExistsRequest(user_ids=[""] * 1001)  # small, but 1001 ids
        await expect_status(
            auth.BatchUserExists(over, metadata=md(READER), timeout=30),
            grpc.StatusCode.INVALID_ARGUMENT,
        )
        too_big = auth_pb2.BatchUserExistsRequest(user_ids=_ids(1001))
        await expect_status(
            auth.BatchUserExists(too_big, metadata=md(READER), timeout=30), EXHAUSTED
        )
        huge = auth_pb2.UserExistsRequest(user_id="x" * 100_000)
        err = await expect_status(auth.UserExists(huge, metadata=md(READER), timeout=30), EXHAUSTED)
        assert "x" * 50 not in (err.details() or "")
        # The server is fine afterwards.
        await auth.UserExists(
            auth_pb2.UserExistsRequest(user_id=SOME_ID), metadata=md(READER), timeout=10
        )


async def test_default_limit_rejects_1001_ids_as_invalid_argument(database_url: str) -> None:
    async with AuthServer(secure_settings(database_url)) as srv:
        async with grpc.aio.insecure_channel(srv.address) as ch:
            auth = auth_pb2_grpc.AuthServiceStub(ch)
            err = await expect_status(
                auth.BatchUserExists(
                    auth_pb2.BatchUserExistsRequest(user_ids=_ids(1001)),
                    metadata=md(READER),
                    timeout=30,
                ),
                grpc.StatusCode.INVALID_ARGUMENT,
            )
            assert "1000" in (err.details() or "")
