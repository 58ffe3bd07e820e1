"""The server's index of every user answers any id from memory and stays exact: ids
changed after its snapshot — through this replica, another one, or SQL by hand,
even while it loads — are answered by a query until the next load; a bulk change
or a lost feed drops it, and it comes back by itself. Real PostgreSQL, real servers."""

from __future__ import annotations

import uuid

import asyncpg
import grpc
import pytest

from auth_client.contract import UserState, admin_pb2_grpc, auth_pb2, auth_pb2_grpc
from auth_service.api.server import AuthServer
from auth_service.store.state_cache import StateCache
from auth_service.store.user_index import UserIndex, load_index
from tests.conftest import eventually, make_settings
from tests.helpers import create_user, delete_user

ACTIVE, DELETED, NOT_FOUND = (
    auth_pb2.USER_STATE_ACTIVE,
    auth_pb2.USER_STATE_DELETED,
    auth_pb2.USER_STATE_NOT_FOUND,
)


def _index(states: dict[uuid.UUID, bool]) -> UserIndex:
    """An index of ids -> deleted, as a load builds it."""
    ordered = sorted(states, key=lambda u: u.bytes)
    return UserIndex(b"".join(u.bytes for u in ordered), bytes(int(states[u]) for u in ordered))


# --- unit: the lookup --------------------------------------------------------------


def test_the_index_answers_every_id_and_ids_sharing_an_upper_half() -> None:
    shared = 0x1234_5678_9ABC_4DEF << 64
    alike = [uuid.UUID(int=shared | low) for low in (5, 9, 2**63, 2**64 - 1)]
    others = [uuid.uuid4() for _ in range(200)]
    states = {u: i % 3 == 0 for i, u in enumerate(alike + others)}
    states[uuid.UUID(int=0)] = False
    index = _index(states)
    assert len(index) == 205
    assert index.deleted == sum(states.values())
    for user_id, deleted in states.items():
        assert index.get(str(user_id)) is (UserState.DELETED if deleted else UserState.ACTIVE)
    for missing in (shared | 6, shared | 1, shared + (1 << 64), 1, 2**128 - 1):
        assert index.get(str(uuid.UUID(int=missing))) is UserState.NOT_FOUND
    index.stale.add(str(alike[0]))  # changed since the snapshot: not from here
    assert index.get(str(alike[0])) is None


def test_ids_announced_while_an_index_loads_are_stale_in_it() -> None:
    cache = StateCache(max_size=10)
    cache.enabled = True
    created = uuid.uuid4()
    cache.begin_load()  # the load's snapshot is taken after this...
    cache.on_notify(str(created))  # ...and misses a user created meanwhile
    assert cache.install(_index({}))
    assert cache.get(str(created)) is None  # a query answers it, not the snapshot
    assert cache.get(str(uuid.uuid4())) is UserState.NOT_FOUND
    cache.begin_load()
    cache.on_notify("*")  # a bulk change during a load: that load is useless
    assert not cache.install(_index({}))
    assert cache.index is None
    assert cache.get(str(uuid.uuid4())) is None


def test_an_index_is_wanted_again_once_much_of_it_changed() -> None:
    # The bound is a twentieth of the cache's size (10,000 at the default 200,000)...
    cache = StateCache()
    cache.enabled = True
    assert cache.index_outdated()  # none yet
    cache.begin_load()
    cache.install(_index({uuid.uuid4(): False for _ in range(100)}))
    assert not cache.index_outdated()
    for _ in range(101):  # more changes than the cache keeps track of: the index stays
        assert not cache.index_outdated()
        cache.on_notify(",".join(str(uuid.uuid4()) for _ in range(100)))
    assert cache.index is not None
    assert len(cache.index.stale) == 10_100
    assert cache.index_outdated()

    # ...and at least 1,000 for a small cache
    small = StateCache(max_size=10)
    small.enabled = True
    small.begin_load()
    small.install(_index({uuid.uuid4(): False for _ in range(100)}))
    small.on_notify(",".join(str(uuid.uuid4()) for _ in range(1_000)))
    assert not small.index_outdated()
    small.on_notify(str(uuid.uuid4()))
    assert small.index_outdated()


# --- real PostgreSQL -----------------------------------------------------------------


async def test_a_load_reads_every_user_in_chunks_and_refuses_a_table_too_large(
    database_url: str,
) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(
            "INSERT INTO users (id, username, display_name, deleted_at)"
            " SELECT gen_random_uuid(), 'chunk' || g, 'c', CASE WHEN g % 4 = 0 THEN now() END"
            " FROM generate_series(1, 250) g"
        )
        rows = await conn.fetch("SELECT id, deleted_at IS NOT NULL AS gone FROM users")
    finally:
        await conn.close()
    index = await load_index(database_url, max_users=len(rows), chunk=7)
    assert index is not None
    assert len(index) == len(rows)
    for row in rows:
        expected = UserState.DELETED if row["gone"] else UserState.ACTIVE
        assert index.get(str(row["id"])) is expected
    assert await load_index(database_url, max_users=len(rows) - 1, chunk=7) is None


async def _states(address: str, ids: list[str]) -> list[int]:
    async with grpc.aio.insecure_channel(address) as channel:
        reply = await auth_pb2_grpc.AuthServiceStub(channel).BatchUserExists(
            auth_pb2.BatchUserExistsRequest(user_ids=ids, states_only=True), timeout=5
        )
    return list(reply.states)


async def _loaded(server: AuthServer, loads: int = 1) -> bool:
    cache = server._lookup.cache
    return cache.enabled and cache.index is not None and cache.index_loads >= loads


@pytest.fixture
async def conn(database_url: str) -> asyncpg.Connection:
    connection = await asyncpg.connect(database_url)
    yield connection
    await connection.close()


async def test_a_server_answers_every_id_from_its_index_and_every_change_reaches_it(
    database_url: str, conn: asyncpg.Connection
) -> None:
    settings = make_settings(database_url, state_index_max_users=1_000_000)
    async with AuthServer(make_settings(database_url)) as a:
        async with grpc.aio.insecure_channel(a.address) as channel:
            admin = admin_pb2_grpc.UserAdminServiceStub(channel)
            user = (await create_user(admin)).id
            gone = (await create_user(admin)).id
            await delete_user(admin, gone)
    async with AuthServer(settings) as b:
        await eventually(lambda: _loaded(b))
        never = str(uuid.uuid4())
        queries = b._lookup.lookups
        assert await _states(b.address, [user, gone, never]) == [ACTIVE, DELETED, NOT_FOUND]
        # The two it knows from memory; the unknown id confirmed by one query (the
        # index may not have heard of a user another replica just created, #27).
        assert b._lookup.lookups == queries + 1

        # Changes after the snapshot, through this replica and by hand.
        async with grpc.aio.insecure_channel(b.address) as channel:
            await delete_user(admin_pb2_grpc.UserAdminServiceStub(channel), user)
        assert await _states(b.address, [user]) == [DELETED]  # read your writes
        await conn.execute(
            "INSERT INTO users (id, username, display_name) VALUES ($1, 'late', 'late')",
            uuid.UUID(never),
        )

        async def caught_up() -> bool:
            return await _states(b.address, [user, never]) == [DELETED, ACTIVE]

        await eventually(caught_up, timeout=2)
        assert b._lookup.cache.index is not None
        assert {user, never} <= b._lookup.cache.index.stale

        # A bulk change drops the index; a new one is loaded and knows it.
        await conn.execute(
            "INSERT INTO users (id, username, display_name)"
            " SELECT gen_random_uuid(), 'bulk' || g, 'b' FROM generate_series(1, 150) g"
        )
        await eventually(lambda: _loaded(b, loads=2))
        bulk = [
            str(r["id"])
            for r in await conn.fetch("SELECT id FROM users WHERE username LIKE 'bulk%'")
        ]
        queries = b._lookup.lookups
        assert await _states(b.address, bulk[:50]) == [ACTIVE] * 50
        assert b._lookup.lookups == queries


async def test_while_the_feed_is_down_nothing_comes_from_the_index_and_it_comes_back(
    database_url: str, conn: asyncpg.Connection
) -> None:
    settings = make_settings(database_url, state_index_max_users=1_000_000)
    async with AuthServer(settings) as server:
        async with grpc.aio.insecure_channel(server.address) as channel:
            user = (await create_user(admin_pb2_grpc.UserAdminServiceStub(channel))).id
        await eventually(lambda: _loaded(server))
        assert await _states(server.address, [user]) == [ACTIVE]
        await conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE application_name = 'auth-service-user-changes'"
        )
        await eventually(lambda: _gone(server), timeout=5)
        # Not announced to this server: it must not answer from the old snapshot.
        await conn.execute("UPDATE users SET deleted_at = now() WHERE id = $1", uuid.UUID(user))
        assert await _states(server.address, [user]) == [DELETED]
        await eventually(lambda: _loaded(server, loads=2), timeout=10)
        queries = server._lookup.lookups
        assert await _states(server.address, [user]) == [DELETED]
        assert server._lookup.lookups == queries


async def _gone(server: AuthServer) -> bool:
    return server._lookup.cache.index is None
