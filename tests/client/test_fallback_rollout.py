"""Fallback policies (what an answer is when auth-service cannot give one) and
rollout modes, against a real server that is stopped where the test needs it."""

from __future__ import annotations

import logging
import uuid

import pytest

from auth_client import (
    AuthClient,
    BreakerConfig,
    CircuitOpenError,
    FallbackPolicy,
    InvalidRequestError,
    RolloutMode,
    ServiceUnavailableError,
    UserNotFoundError,
)
from auth_service.api.server import AuthServer
from tests.client.conftest import CountingInterceptor, seed_users
from tests.conftest import eventually

FAST = {"timeout": 2.0}


def finish_without_suspending(coro):
    """Run a coroutine that must not wait for anything: it completes on its first
    step (no I/O, no await on an RPC) or the test fails."""
    with pytest.raises(StopIteration) as info:
        coro.send(None)
    return info.value.value


async def test_fail_closed_is_the_default(make_client, server: AuthServer) -> None:
    client: AuthClient = await make_client(**FAST)
    await server.stop()
    with pytest.raises(ServiceUnavailableError):
        await client.user_exists(uuid.uuid4())
    with pytest.raises(ServiceUnavailableError):
        await client.require_users([uuid.uuid4(), uuid.uuid4()])
    with pytest.raises(ServiceUnavailableError):
        await client.get_user(uuid.uuid4())
    assert client.stats().unavailable == 3


async def test_fail_open_answers_exists_and_reports_only_the_unverified_ids(
    make_client, server: AuthServer, settings
) -> None:
    (known,), _ = await seed_users(settings.database_url, 1)
    reported: list[tuple[uuid.UUID, ...]] = []
    client: AuthClient = await make_client(
        fallback=FallbackPolicy.FAIL_OPEN, on_unverified=reported.append, **FAST
    )
    assert await client.user_exists(known) is True  # cached while the server is up
    await server.stop()
    a, b = uuid.uuid4(), uuid.uuid4()

    assert await client.user_exists(a) is True
    assert await client.users_exist([known, a, b]) == {known: True, a: True, b: True}
    await client.require_users([b, known])

    assert reported == [(a,), (a, b), (b,)]
    assert client.stats().fallback_open == 4


async def test_fail_open_awaits_a_coroutine_hook_and_its_errors_propagate(
    make_client, server: AuthServer
) -> None:
    recorded: list[uuid.UUID] = []

    async def record(user_ids: tuple[uuid.UUID, ...]) -> None:
        recorded.extend(user_ids)

    client: AuthClient = await make_client(
        fallback=FallbackPolicy.FAIL_OPEN, on_unverified=record, **FAST
    )
    await server.stop()
    uid = uuid.uuid4()
    await client.require_user(uid)
    assert recorded == [uid]

    def broken(user_ids: tuple[uuid.UUID, ...]) -> None:
        raise RuntimeError("recording failed")

    other: AuthClient = await make_client(
        fallback=FallbackPolicy.FAIL_OPEN, on_unverified=broken, **FAST
    )
    with pytest.raises(RuntimeError, match="recording failed"):
        await other.require_user(uuid.uuid4())


async def test_fail_open_also_covers_an_open_breaker(
    make_client, counter: CountingInterceptor, server: AuthServer
) -> None:
    reported: list[tuple[uuid.UUID, ...]] = []
    client: AuthClient = await make_client(
        fallback=FallbackPolicy.FAIL_OPEN,
        on_unverified=reported.append,
        breaker=BreakerConfig(fail_max=1, reset_timeout=600),
        **FAST,
    )
    await server.stop()
    assert await client.user_exists(uuid.uuid4()) is True
    assert client.stats().breaker_state == "open"
    sent = counter.total
    uid = uuid.uuid4()
    assert await client.user_exists(uid) is True
    assert reported[-1] == (uid,)
    assert counter.total == sent
    with pytest.raises(CircuitOpenError):
        await client.user_exists(uuid.uuid4(), fallback=FallbackPolicy.FAIL_CLOSED)


async def test_per_call_fallback_overrides_the_client_policy(
    make_client, server: AuthServer
) -> None:
    client: AuthClient = await make_client(**FAST)  # FAIL_CLOSED
    await server.stop()
    assert await client.user_exists(uuid.uuid4(), fallback=FallbackPolicy.FAIL_OPEN) is True
    with pytest.raises(ServiceUnavailableError):
        await client.user_exists(uuid.uuid4())


async def test_fallbacks_never_hide_a_real_answer(make_client) -> None:
    client: AuthClient = await make_client(fallback=FallbackPolicy.FAIL_OPEN, **FAST)
    missing = uuid.uuid4()
    with pytest.raises(UserNotFoundError) as info:
        await client.require_user(missing)
    assert info.value.user_ids == (missing,)
    assert client.stats().fallback_open == 0


async def test_shadow_never_blocks_and_counts_disagreements(
    make_client, counter: CountingInterceptor, settings, caplog
) -> None:
    (known,), _ = await seed_users(settings.database_url, 1)
    client: AuthClient = await make_client(rollout=RolloutMode.SHADOW)
    missing = uuid.uuid4()
    caplog.set_level(logging.WARNING, logger="auth_client")

    assert finish_without_suspending(client.user_exists(missing)) is True
    assert finish_without_suspending(client.user_exists(known)) is True
    finish_without_suspending(client.require_user(missing))  # no UserNotFoundError
    assert finish_without_suspending(client.users_exist([missing, known])) == {
        missing: True,
        known: True,
    }

    async def checked() -> bool:
        return client.stats().shadow_disagreements == 3 and counter.total >= 1

    await eventually(checked)
    assert client.stats().shadow_failures == 0
    assert str(missing) in caplog.text
    assert str(known) not in caplog.text
    # Cached "does not exist" answers are compared too.
    await client.require_user(missing)
    assert client.stats().shadow_disagreements == 4


async def test_shadow_counts_failures_and_still_answers_exists(
    make_client, server: AuthServer, caplog
) -> None:
    client: AuthClient = await make_client(rollout=RolloutMode.SHADOW, **FAST)
    await server.stop()
    caplog.set_level(logging.WARNING, logger="auth_client")

    for _ in range(3):
        assert finish_without_suspending(client.user_exists(uuid.uuid4())) is True

    async def failed() -> bool:
        return client.stats().shadow_failures == 3

    await eventually(failed)
    assert "SHADOW" in caplog.text
    assert "failed" in caplog.text


async def test_off_makes_no_calls_at_all(make_client, counter: CountingInterceptor) -> None:
    client: AuthClient = await make_client(rollout=RolloutMode.OFF)
    missing = uuid.uuid4()
    assert finish_without_suspending(client.user_exists(missing)) is True
    finish_without_suspending(client.require_users([missing, uuid.uuid4()]))
    assert counter.total == 0
    assert client.stats().unchecked == 3
    with pytest.raises(InvalidRequestError):  # a malformed id is still a bug
        await client.user_exists("not-a-uuid")
