"""The cache against a real server: hits need no server, expiry is honoured,
"does not exist" expires sooner, and invalidate / mark_deleted take effect.

TTLs pass on a clock the test moves (`Clock`, put in the client's cache), never by
sleeping: expiry is measured on that clock alone, while deadlines and the circuit
breaker keep real time."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import pytest

from auth_client import (
    AuthClient,
    CacheConfig,
    FallbackPolicy,
    ServiceUnavailableError,
    UserState,
)
from auth_client.contract import admin_pb2
from auth_service.api.server import AuthServer
from tests.client.conftest import CountingInterceptor, seed_users
from tests.conftest import ADMIN_MD, eventually

LONG = CacheConfig(positive_ttl=600, negative_ttl=600)


class Clock:
    """The clock of a client's cache (`ExistsCache.clock`), moved by the test."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


async def clocked(make_client, **options) -> tuple[AuthClient, Clock]:
    """A client from `make_client(**options)` whose cache runs on a `Clock`."""
    client: AuthClient = await make_client(**options)
    clock = Clock()
    client._cache.clock = clock
    return client, clock


async def test_cached_answers_are_served_with_the_server_stopped(
    make_client, counter: CountingInterceptor, server: AuthServer, settings
) -> None:
    (user,), (gone,) = await seed_users(settings.database_url, 1, deleted=1)
    never = uuid.uuid4()
    client: AuthClient = await make_client(cache=LONG)
    assert await client.users_exist([user, gone, never]) == {user: True, gone: False, never: False}
    sent = counter.total

    await server.stop()

    assert await client.user_exists(user) is True
    assert await client.user_exists(str(user).upper()) is True
    assert await client.user_exists(gone) is False
    assert await client.user_exists(never) is False
    await client.require_user(user)
    assert await client.users_exist([user, gone]) == {user: True, gone: False}
    assert counter.total == sent
    assert client.stats().cache_hits == 7


async def test_expired_answers_are_not_served_unless_serve_stale(
    make_client, server: AuthServer, settings
) -> None:
    (user,), _ = await seed_users(settings.database_url, 1)
    client, clock = await clocked(
        make_client, cache=CacheConfig(positive_ttl=30, negative_ttl=2, max_stale=600), timeout=2.0
    )
    assert await client.user_exists(user) is True
    await server.stop()
    clock.advance(29)
    assert await client.user_exists(user) is True  # still fresh: no call
    clock.advance(1)  # past the TTL

    with pytest.raises(ServiceUnavailableError):
        await client.user_exists(user)
    assert await client.user_exists(user, fallback=FallbackPolicy.SERVE_STALE) is True
    assert client.stats().fallback_stale == 1
    # Stale answers exist only for ids seen before: the rest still fail closed.
    with pytest.raises(ServiceUnavailableError):
        await client.users_exist([user, uuid.uuid4()], fallback=FallbackPolicy.SERVE_STALE)


async def test_serve_stale_gives_up_after_max_stale(
    make_client, server: AuthServer, settings
) -> None:
    (user,), _ = await seed_users(settings.database_url, 1)
    client, clock = await clocked(
        make_client,
        cache=CacheConfig(positive_ttl=30, max_stale=60),
        fallback=FallbackPolicy.SERVE_STALE,
        timeout=2.0,
    )
    assert await client.user_exists(user) is True
    await server.stop()
    clock.advance(30 + 60)  # expired, but no more than max_stale ago
    assert await client.user_exists(user) is True
    assert client.stats().fallback_stale == 1
    clock.advance(1)  # past TTL + max_stale
    with pytest.raises(ServiceUnavailableError):
        await client.user_exists(user)


async def test_does_not_exist_expires_sooner_than_exists(
    make_client, counter: CountingInterceptor, settings
) -> None:
    client, clock = await clocked(make_client, cache=CacheConfig(positive_ttl=30, negative_ttl=2))
    new_id = uuid.uuid4()
    assert await client.user_exists(new_id) is False

    conn = await asyncpg.connect(settings.database_url)
    try:
        await conn.execute(
            "INSERT INTO users (id, username, display_name) VALUES ($1, 'late', 'Late')", new_id
        )
    finally:
        await conn.close()

    clock.advance(1.5)
    assert await client.user_exists(new_id) is False  # still the cached answer
    clock.advance(0.5)  # past negative_ttl
    assert await client.user_exists(new_id) is True
    clock.advance(29.5)
    assert await client.user_exists(new_id) is True  # "exists" is kept for positive_ttl
    assert counter.total == 2


async def test_invalidate_makes_the_next_lookup_ask_again(
    make_client, counter: CountingInterceptor, admin_stub, settings
) -> None:
    (user,), _ = await seed_users(settings.database_url, 1)
    client: AuthClient = await make_client(cache=LONG)
    assert await client.user_exists(user) is True
    await admin_stub.DeleteUser(admin_pb2.DeleteUserRequest(user_id=str(user)), metadata=ADMIN_MD)
    assert await client.user_exists(user) is True  # cached: stale up to positive_ttl

    client.invalidate(str(user))

    assert await client.user_exists(user) is False
    assert counter.total == 2


async def test_mark_deleted_answers_does_not_exist_without_asking(
    make_client, counter: CountingInterceptor, settings
) -> None:
    (user,), _ = await seed_users(settings.database_url, 1)
    client: AuthClient = await make_client(cache=LONG)
    assert await client.user_exists(user) is True

    client.mark_deleted(user)

    assert await client.user_exists(user) is False
    assert counter.total == 1


async def test_an_answer_in_flight_when_marked_deleted_is_not_cached(
    make_client, counter: CountingInterceptor, settings
) -> None:
    (user,), _ = await seed_users(settings.database_url, 1)
    client: AuthClient = await make_client(cache=LONG)
    lookup = asyncio.create_task(client.user_exists(user))
    while user not in client._batcher._inflight:  # type: ignore[union-attr]
        await asyncio.sleep(0)

    client.mark_deleted(user)

    assert await lookup is True  # that caller raced the deletion
    assert await client.user_exists(user) is False
    assert counter.total == 1


async def test_the_cache_is_bounded_and_evicts_the_least_recently_used(
    make_client, counter: CountingInterceptor
) -> None:
    client: AuthClient = await make_client(cache=CacheConfig(max_size=10, negative_ttl=600))
    ids = [uuid.uuid4() for _ in range(11)]
    for uid in ids[:10]:
        assert await client.user_exists(uid) is False
    assert await client.user_exists(ids[0]) is False  # now the most recently used
    assert await client.user_exists(ids[10]) is False  # evicts ids[1]
    assert client.stats().cache_size == 10
    sent = counter.total
    assert await client.user_exists(ids[0]) is False
    assert counter.total == sent
    assert await client.user_exists(ids[1]) is False
    assert counter.total == sent + 1


async def test_a_zero_ttl_disables_caching(make_client, counter: CountingInterceptor) -> None:
    client: AuthClient = await make_client(cache=CacheConfig(positive_ttl=0, negative_ttl=0))
    uid = uuid.uuid4()
    assert await client.user_exists(uid) is False
    assert await client.user_exists(uid) is False
    assert counter.total == 2


async def test_user_states_tell_deleted_from_never_and_bypass_the_cache(
    make_client, counter: CountingInterceptor, server: AuthServer, settings
) -> None:
    (user,), (gone,) = await seed_users(settings.database_url, 1, deleted=1)
    never = uuid.uuid4()
    client: AuthClient = await make_client(cache=LONG)
    assert await client.user_exists(user) is True  # now cached as existing
    conn = await asyncpg.connect(settings.database_url)
    try:
        await conn.execute("UPDATE users SET deleted_at = now() WHERE id = $1", user)
    finally:
        await conn.close()
    # The server's own memory answers ACTIVE until the change's notification
    # reaches it (about a millisecond; longer on a loaded machine): wait for that,
    # since what is asserted here is the client's cache being bypassed.
    await eventually(lambda: _heard(server, user))
    sent = counter.total
    states = await client.user_states([user, gone, str(never), gone])
    assert states == {
        user: UserState.DELETED,  # the server's answer, not the cached "exists"
        gone: UserState.DELETED,
        never: UserState.NOT_FOUND,
    }
    assert counter.total == sent + 1
    many = [uuid.uuid4() for _ in range(2500)]
    assert set((await client.user_states(many)).values()) == {UserState.NOT_FOUND}
    assert counter.total == sent + 4  # 1000 + 1000 + 500


async def _heard(server: AuthServer, user: uuid.UUID) -> bool:
    """The server's memory no longer holds `user` as ACTIVE."""
    return server.lookup.cache.get(str(user)) is not UserState.ACTIVE
