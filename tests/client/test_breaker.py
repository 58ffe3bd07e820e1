"""The circuit breaker against a real `auth-service serve` process that is killed,
frozen and restarted (the breaker on its own: clients/client_tests)."""

from __future__ import annotations

import asyncio
import signal
import time
import uuid

import pytest

from auth_client import (
    AuthClient,
    BreakerConfig,
    ChannelConfig,
    CircuitOpenError,
    DeadlineExceededError,
    ServiceUnavailableError,
    UserNotFoundError,
)
from tests.client.conftest import CountingInterceptor, ServeProcess, seed_users
from tests.conftest import ADMIN_TOKEN, eventually


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
