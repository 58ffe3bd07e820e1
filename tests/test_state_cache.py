"""The server's cache of user states is exact: every change to the users table —
through this replica, another one, or SQL by hand — drops the cached answer (up to
the delivery of a notification), and while the change feed is down nothing is
served from the cache. Real PostgreSQL, real servers."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import grpc

from auth_client.contract import UserState, admin_pb2_grpc, auth_pb2, auth_pb2_grpc
from auth_service.api.server import AuthServer
from auth_service.store.state_cache import StateCache
from tests.conftest import eventually, make_settings
from tests.helpers import create_user, delete_user

ACTIVE, DELETED, NOT_FOUND = (
    auth_pb2.USER_STATE_ACTIVE,
    auth_pb2.USER_STATE_DELETED,
    auth_pb2.USER_STATE_NOT_FOUND,
)


# --- unit: what may be stored --------------------------------------------------


def test_an_answer_read_before_a_change_is_not_stored_after_it() -> None:
    cache = StateCache(max_size=10)
    cache.enabled = True
    since = cache.generation()  # a query starts...
    cache.on_notify("a,b")  # ...a and b change meanwhile...
    cache.store({"a": UserState.ACTIVE, "c": UserState.ACTIVE}, since)  # ...it answers
    assert cache.get("a") is None  # the old state of a changed id is not kept
    assert cache.get("c") is UserState.ACTIVE
    since = cache.generation()
    cache.on_notify("*")  # a bulk change: everything goes
    cache.store({"d": UserState.DELETED}, since)
    assert (cache.get("c"), cache.get("d")) == (None, None)
    cache.enabled = False  # feed down: nothing is served
    assert cache.get("c") is None


def test_an_answer_read_after_a_change_is_stored() -> None:
    """A query that starts after an id's announcement reads the new state: keep it
    (else a freshly created or deleted user is never served from the cache)."""
    cache = StateCache(max_size=10)
    cache.enabled = True
    cache.forget(["a"])  # this replica created a
    since = cache.generation()  # then a query for a starts
    cache.store({"a": UserState.ACTIVE}, since)
    assert cache.get("a") is UserState.ACTIVE


def test_the_cache_is_bounded() -> None:
    cache = StateCache(max_size=3)
    cache.enabled = True
    cache.store(dict.fromkeys("abcde", UserState.ACTIVE), cache.generation())
    assert len(cache) == 3
    assert cache.get("a") is None
    assert cache.get("e") is UserState.ACTIVE


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_replicas_active_is_kept_only_if_the_replica_was_complete_after_the_announcement() -> (
    None
):
    """A read replica answers ACTIVE for a user whose deletion was announced at
    t=101 but which it may not have replayed: kept only when the replica was known
    complete up to a later moment before the query (`fresh_as_of`)."""
    clock = _Clock()
    cache = StateCache(max_size=10, clock=clock)
    cache.clear()  # the feed came up at t=100
    cache.enabled = True
    clock.now = 101.0
    cache.on_notify("a")
    clock.now = 102.0
    since = cache.generation()
    answers = {"a": UserState.ACTIVE, "b": UserState.ACTIVE, "d": UserState.DELETED}
    cache.store(answers, since, fresh_as_of=100.5)  # complete before 101 only
    assert (cache.get("a"), cache.get("b"), cache.get("d")) == (
        None,
        UserState.ACTIVE,
        UserState.DELETED,
    )
    cache.store(answers, since, fresh_as_of=101.5)  # complete past the announcement
    assert cache.get("a") is UserState.ACTIVE
    # Not complete since the feed came up (announcements may have been missed
    # while it was down): no ACTIVE of it is kept; DELETED is final.
    cache.clear()
    cache.store(answers, cache.generation(), fresh_as_of=101.5)
    assert (cache.get("b"), cache.get("d")) == (None, UserState.DELETED)


def test_announcements_kept_for_replica_answers_are_bounded() -> None:
    """Beyond the tracked announcements, the oldest half counts as everything
    announced at the newest of them: conservative, never forgotten."""
    clock = _Clock()
    cache = StateCache(max_size=20_000, clock=clock)
    cache.enabled = True
    for n in range(1_001):  # the bound at this size: 1,000
        clock.now = 100.0 + n
        cache.on_notify(f"id{n}")
    since = cache.generation()
    cache.store({"other": UserState.ACTIVE}, since, fresh_as_of=100.0 + 499)
    assert cache.get("other") is None  # fresh only before the folded announcements
    cache.store({"other": UserState.ACTIVE}, since, fresh_as_of=100.0 + 501)
    assert cache.get("other") is UserState.ACTIVE


# --- real servers ------------------------------------------------------------------


async def _state(address: str, user_id: str) -> int:
    async with grpc.aio.insecure_channel(address) as channel:
        reply = await auth_pb2_grpc.AuthServiceStub(channel).UserExists(
            auth_pb2.UserExistsRequest(user_id=user_id), timeout=5
        )
    return int(reply.state)


async def _batch(address: str, ids: list[str]) -> list[int]:
    async with grpc.aio.insecure_channel(address) as channel:
        reply = await auth_pb2_grpc.AuthServiceStub(channel).BatchUserExists(
            auth_pb2.BatchUserExistsRequest(user_ids=ids, states_only=True), timeout=5
        )
    return list(reply.states)


async def _listening(server: AuthServer) -> bool:
    return server.user_changes is not None and server.user_changes.listening


async def test_a_change_through_another_replica_or_by_hand_reaches_the_cache(
    database_url: str,
) -> None:
    async with (
        AuthServer(make_settings(database_url)) as a,
        AuthServer(make_settings(database_url)) as b,
    ):
        await eventually(lambda: _listening(b))
        async with grpc.aio.insecure_channel(a.address) as channel:
            admin = admin_pb2_grpc.UserAdminServiceStub(channel)
            user = await create_user(admin)
            by_hand = await create_user(admin)
            never = str(uuid.uuid4())
            assert await _state(b.address, user.id) == ACTIVE
            assert await _batch(b.address, [by_hand.id, never]) == [ACTIVE, NOT_FOUND]
            cache = b._lookup.cache
            assert cache.get(user.id) is UserState.ACTIVE  # b answers it from memory now
            # NOT_FOUND is never kept: only a query on the primary says it (#27).
            assert cache.get(never) is None

            await delete_user(admin, user.id)  # through replica a
        conn = await asyncpg.connect(database_url)
        try:
            await conn.execute(
                "UPDATE users SET deleted_at = now() WHERE id = $1", uuid.UUID(by_hand.id)
            )
            await conn.execute(
                "INSERT INTO users (id, username, display_name) VALUES ($1, 'late', 'late')",
                uuid.UUID(never),
            )
        finally:
            await conn.close()

        async def caught_up() -> bool:
            return await _batch(b.address, [user.id, by_hand.id, never]) == [
                DELETED,
                DELETED,
                ACTIVE,
            ]

        await eventually(caught_up, timeout=2)


async def test_nothing_is_served_from_the_cache_while_the_feed_is_down(
    database_url: str,
) -> None:
    async with AuthServer(make_settings(database_url)) as server:
        await eventually(lambda: _listening(server))
        async with grpc.aio.insecure_channel(server.address) as channel:
            user = await create_user(admin_pb2_grpc.UserAdminServiceStub(channel))
        assert await _state(server.address, user.id) == ACTIVE
        conn = await asyncpg.connect(database_url)
        try:
            # The feed's connection dies; a change made meanwhile is not announced
            # to this server, yet it must not answer the old state.
            await conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE application_name = 'auth-service-user-changes'"
            )
            await eventually(lambda: _not(_listening(server)), timeout=5)
            await conn.execute(
                "UPDATE users SET deleted_at = now() WHERE id = $1", uuid.UUID(user.id)
            )
            assert await _state(server.address, user.id) == DELETED
            # Back: the cache starts empty and serves again.
            await eventually(lambda: _listening(server), timeout=10)
            assert await _state(server.address, user.id) == DELETED
            assert server._lookup.cache.get(user.id) is UserState.DELETED
            # A bulk change (more than 100 rows in one statement) clears everything.
            await conn.execute(
                "INSERT INTO users (id, username, display_name)"
                " SELECT gen_random_uuid(), 'bulk' || g, 'b' FROM generate_series(1, 150) g"
            )
            await eventually(
                lambda: _is(server._lookup.cache.get(user.id) is None),
                timeout=2,
            )
        finally:
            await conn.close()


async def _not(value: object) -> bool:
    return not await value  # type: ignore[misc]


async def _is(value: bool) -> bool:
    await asyncio.sleep(0)
    return value
