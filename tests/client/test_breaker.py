"""The circuit breaker: what counts as a failure, one probe in half-open, and the
whole cycle against a real `auth-service serve` process that is killed, frozen
and restarted."""

from __future__ import annotations

import asyncio
import signal
import time
import uuid

import grpc
import pytest

from auth_client import (
    AuthClient,
    BreakerConfig,
    ChannelConfig,
    CircuitOpenError,
    DeadlineExceededError,
    InvalidRequestError,
    PermissionDeniedError,
    ServiceUnavailableError,
    UserNotFoundError,
)
from auth_client._breaker import Breaker
from tests.client.conftest import CountingInterceptor, ServeProcess, seed_users
from tests.conftest import ADMIN_TOKEN, eventually

# -- the breaker on its own (a pure unit: the guarded calls are plain coroutines) --


class Calls:
    def __init__(self) -> None:
        self.count = 0

    def failing(self, error: BaseException):
        async def call() -> None:
            self.count += 1
            raise error

        return call

    def answering(self, value: object = "ok", gate: asyncio.Event | None = None):
        async def call() -> object:
            self.count += 1
            if gate is not None:
                await gate.wait()
            return value

        return call


def unavailable() -> ServiceUnavailableError:
    return ServiceUnavailableError("down", code=grpc.StatusCode.UNAVAILABLE)


async def test_breaker_opens_after_fail_max_transport_failures_and_then_fails_without_calling() -> (
    None
):
    breaker = Breaker(BreakerConfig(fail_max=3, reset_timeout=60), name="t")
    calls = Calls()
    for _ in range(3):
        with pytest.raises(ServiceUnavailableError) as info:
            await breaker.call(calls.failing(unavailable()))
        assert type(info.value) is ServiceUnavailableError  # the tripping call keeps its error
    assert breaker.state == "open"
    assert breaker.rejects(time.monotonic())
    with pytest.raises(CircuitOpenError):
        await breaker.call(calls.answering())
    assert calls.count == 3


@pytest.mark.parametrize(
    "error",
    [
        UserNotFoundError([uuid.uuid4()], code=grpc.StatusCode.NOT_FOUND),
        InvalidRequestError("bad", code=grpc.StatusCode.INVALID_ARGUMENT),
        PermissionDeniedError("no", code=grpc.StatusCode.PERMISSION_DENIED),
        ServiceUnavailableError("bug", code=grpc.StatusCode.INTERNAL),
        asyncio.CancelledError(),
    ],
    ids=["not-found", "invalid-argument", "permission-denied", "internal", "cancelled"],
)
async def test_answers_and_cancellation_never_count_as_failures(error: BaseException) -> None:
    breaker = Breaker(BreakerConfig(fail_max=2, reset_timeout=60), name="t")
    calls = Calls()
    for _ in range(10):
        with pytest.raises(type(error)):
            await breaker.call(calls.failing(error))
    assert breaker.state == "closed"
    assert breaker.failures == 0


@pytest.mark.parametrize(
    "error",
    [
        ServiceUnavailableError("x", code=grpc.StatusCode.UNAVAILABLE),
        DeadlineExceededError("x", code=grpc.StatusCode.DEADLINE_EXCEEDED),
        ServiceUnavailableError("x", code=grpc.StatusCode.RESOURCE_EXHAUSTED),
        ServiceUnavailableError("no status"),
    ],
    ids=["unavailable", "deadline", "resource-exhausted", "no-status"],
)
async def test_transport_failures_count(error: BaseException) -> None:
    breaker = Breaker(BreakerConfig(fail_max=2, reset_timeout=60), name="t")
    for _ in range(2):
        with pytest.raises(ServiceUnavailableError):
            await breaker.call(Calls().failing(error))
    assert breaker.state == "open"


async def test_half_open_admits_exactly_one_probe() -> None:
    changes: list[tuple[str, str]] = []
    breaker = Breaker(
        BreakerConfig(fail_max=1, reset_timeout=0.05),
        name="t",
        listeners=(lambda old, new: changes.append((old, new)),),
    )
    calls = Calls()
    with pytest.raises(ServiceUnavailableError):
        await breaker.call(calls.failing(unavailable()))
    await asyncio.sleep(0.1)  # past reset_timeout: the next call is the probe
    assert not breaker.rejects(time.monotonic())

    gate = asyncio.Event()
    probe = asyncio.create_task(breaker.call(calls.answering("probe", gate)))
    await asyncio.sleep(0)
    assert breaker.state == "half-open"
    assert breaker.rejects(time.monotonic())
    for _ in range(20):
        with pytest.raises(CircuitOpenError):
            await breaker.call(calls.answering())
    assert calls.count == 2  # the failure and the probe; nothing else got through

    gate.set()
    assert await probe == "probe"
    assert breaker.state == "closed"
    assert await breaker.call(calls.answering("after")) == "after"
    assert changes == [("closed", "open"), ("open", "half-open"), ("half-open", "closed")]


async def test_a_failed_probe_opens_the_breaker_again() -> None:
    breaker = Breaker(BreakerConfig(fail_max=1, reset_timeout=0.05), name="t")
    with pytest.raises(ServiceUnavailableError):
        await breaker.call(Calls().failing(unavailable()))
    await asyncio.sleep(0.1)
    with pytest.raises(ServiceUnavailableError):
        await breaker.call(Calls().failing(unavailable()))
    assert breaker.state == "open"
    assert breaker.opened_count == 2
    with pytest.raises(CircuitOpenError):
        await breaker.call(Calls().answering())


# -- against a real server -----------------------------------------------------


async def test_not_found_answers_and_cancelled_callers_never_open_the_breaker(
    make_client, counter: CountingInterceptor
) -> None:
    client: AuthClient = await make_client(breaker=BreakerConfig(fail_max=2, reset_timeout=60))
    for _ in range(5):
        assert await client.get_user(uuid.uuid4()) is None  # NOT_FOUND from the server
        assert await client.user_exists(uuid.uuid4()) is False
        with pytest.raises(UserNotFoundError):
            await client.require_user(uuid.uuid4())
    tasks = [asyncio.create_task(client.user_exists(uuid.uuid4())) for _ in range(50)]
    await asyncio.sleep(0)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await eventually(lambda: _settled(client))
    assert client.stats().breaker_state == "closed"
    assert client._breaker.failures == 0
    assert counter.calls["GetUser"] == 5


async def _state_is(client: AuthClient, state: str) -> bool:
    return client.stats().breaker_state == state


async def _settled(client: AuthClient) -> bool:
    return not client._batcher._tasks  # type: ignore[union-attr]


def _serve_client(process: ServeProcess, counter: CountingInterceptor, **options) -> AuthClient:
    return AuthClient(
        process.address,
        token=ADMIN_TOKEN,  # `serve` answers reads only for known tokens
        interceptors=[counter],
        channel_config=ChannelConfig(reconnect_backoff_initial=0.05, reconnect_backoff_max=0.3),
        **options,
    )


@pytest.mark.slow
async def test_killed_server_then_open_breaker_then_half_open_probe_after_restart(
    serve_process: ServeProcess, database_url: str, counter: CountingInterceptor
) -> None:
    (user,), _ = await seed_users(database_url, 1)
    timeout = 1.0
    options = {"timeout": timeout, "breaker": BreakerConfig(fail_max=3, reset_timeout=1.0)}
    async with _serve_client(serve_process, counter, **options) as client:
        assert await client.user_exists(user) is True

        serve_process.kill()
        for _ in range(3):
            started = time.monotonic()
            with pytest.raises(ServiceUnavailableError) as info:
                await client.user_exists(uuid.uuid4())
            assert not isinstance(info.value, CircuitOpenError)
            # Behaviour, not speed: the failure arrives by the deadline (with
            # slack for a loaded machine), not after reconnect attempts.
            assert time.monotonic() - started < timeout + 2.0
        assert client.stats().breaker_state == "open"

        sent = counter.total
        for _ in range(100):
            # Fails on its first step: nothing to wait for, no RPC.
            lookup = client.user_exists(uuid.uuid4())
            with pytest.raises(CircuitOpenError):
                lookup.send(None)
        with pytest.raises(CircuitOpenError):
            await client.get_user(user)
        assert counter.total == sent  # no RPC while open
        assert await client.user_exists(user) is True  # cached answers still served

        await serve_process.start()

        async def recovered() -> bool:
            try:
                return await client.user_exists(uuid.uuid4()) is False
            except ServiceUnavailableError:
                return False

        await eventually(recovered, timeout=30, interval=0.2)
        assert client.stats().breaker_state == "closed"
        assert client.stats().breaker_opened >= 1
        client.invalidate(user)
        assert await client.user_exists(user) is True


@pytest.mark.slow
async def test_frozen_server_hits_the_deadline_and_half_open_sends_one_probe(
    serve_process: ServeProcess, database_url: str, counter: CountingInterceptor
) -> None:
    (user,), _ = await seed_users(database_url, 1)
    options = {"timeout": 0.3, "breaker": BreakerConfig(fail_max=2, reset_timeout=0.5)}
    async with _serve_client(serve_process, counter, **options) as client:
        assert await client.user_exists(uuid.uuid4()) is False  # connected

        serve_process.signal(signal.SIGSTOP)  # alive but unresponsive
        for _ in range(2):
            started = time.monotonic()
            with pytest.raises(DeadlineExceededError):
                await client.user_exists(uuid.uuid4())
            assert time.monotonic() - started < 0.3 + 2.0
        await eventually(lambda: _state_is(client, "open"))

        await asyncio.sleep(0.6)  # past reset_timeout
        sent = counter.total
        probe = asyncio.create_task(client.user_exists(user, timeout=30))
        await asyncio.sleep(0.05)
        assert client.stats().breaker_state == "half-open"
        for _ in range(50):
            with pytest.raises(CircuitOpenError):
                await client.user_exists(uuid.uuid4())
        assert counter.total == sent + 1  # only the probe went out

        serve_process.signal(signal.SIGCONT)
        assert await probe is True
        assert client.stats().breaker_state == "closed"
        assert await client.user_exists(uuid.uuid4()) is False
