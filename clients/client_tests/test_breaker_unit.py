"""The circuit breaker on its own (a pure unit: the guarded calls are plain
coroutines): what counts as a failure, and one probe in half-open."""

from __future__ import annotations

import asyncio
import time
import uuid

import grpc
import pytest

from auth_client import (
    BreakerConfig,
    CircuitOpenError,
    DeadlineExceededError,
    InvalidRequestError,
    PermissionDeniedError,
    ServiceUnavailableError,
    UserNotFoundError,
)
from auth_client._breaker import Breaker


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


async def test_late_failures_of_calls_in_flight_do_not_open_it_again() -> None:
    """100 calls in flight when the server dies: the breaker opens once (one log
    line, one listener call, one count), and the probe is not pushed back."""
    changes: list[tuple[str, str]] = []
    breaker = Breaker(
        BreakerConfig(fail_max=3, reset_timeout=60),
        name="t",
        listeners=(lambda old, new: changes.append((old, new)),),
    )
    gate = asyncio.Event()

    async def hangs_then_fails() -> None:
        await gate.wait()
        raise unavailable()

    calls = [asyncio.ensure_future(breaker.call(hangs_then_fails)) for _ in range(100)]
    await asyncio.sleep(0)
    gate.set()
    results = await asyncio.gather(*calls, return_exceptions=True)
    assert all(isinstance(r, ServiceUnavailableError) for r in results)
    assert breaker.opened_count == 1
    assert changes == [("closed", "open")]
    assert breaker.state == "open"
