"""Reads from a real hot standby (DATABASE_READ_URL, #27): lookups leave the primary,
yet a user created on the primary is never NOT_FOUND however far behind the standby
is; a standby that stops or falls behind is not read until it is well again."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any

import grpc
import pytest

from auth_client.contract import admin_pb2_grpc, auth_pb2, auth_pb2_grpc
from auth_service.api.server import AuthServer
from auth_service.store.replicas import ReplicaState
from tests.conftest import eventually, make_settings
from tests.helpers import create_user, delete_user
from tests.ops.support import samples, value

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from auth_service.store.replicas import Replica
    from tests.replicas.conftest import Replicated

pytestmark = pytest.mark.slow


async def _true(value: bool) -> bool:
    return value


@contextlib.asynccontextmanager
async def serving(db: Replicated, **overrides: Any) -> AsyncIterator[tuple[AuthServer, Stubs]]:
    """A server reading the standby; no state cache or index, so every lookup is a
    query and the counters say which server answered it."""
    settings = make_settings(
        db.primary_url,
        **{
            "database_read_urls": (db.standby_url,),
            "state_index_max_users": 0,
            "state_cache_size": 0,
            **overrides,
        },
    )
    async with AuthServer(settings) as server, grpc.aio.insecure_channel(server.address) as ch:
        stubs = Stubs(ch)
        replica = _replica(server)
        await eventually(lambda: _true(replica.readable), timeout=20)
        yield server, stubs


class Stubs:
    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.admin = admin_pb2_grpc.UserAdminServiceStub(channel)
        self.read = auth_pb2_grpc.AuthServiceStub(channel)

    async def exists(self, user_id: str) -> int:
        reply = await self.read.UserExists(auth_pb2.UserExistsRequest(user_id=user_id), timeout=10)
        return int(reply.state)

    async def batch(self, ids: list[str]) -> list[int]:
        reply = await self.read.BatchUserExists(
            auth_pb2.BatchUserExistsRequest(user_ids=ids), timeout=10
        )
        return [int(r.state) for r in reply.results]

    async def get(self, user_id: str) -> bool:
        try:
            await self.read.GetUser(auth_pb2.GetUserRequest(user_id=user_id), timeout=10)
        except grpc.aio.AioRpcError as exc:
            assert exc.code() == grpc.StatusCode.NOT_FOUND, exc
            return False
        return True


def _replica(server: AuthServer) -> Replica:
    assert server.replicas is not None
    [replica] = server.replicas.replicas
    return replica


ACTIVE, DELETED = auth_pb2.USER_STATE_ACTIVE, auth_pb2.USER_STATE_DELETED


async def test_with_replay_paused_new_users_are_found_and_old_ones_read_from_the_standby(
    replicated: Replicated,
) -> None:
    # A generous lag bound: the paused standby stays readable, and stale.
    async with serving(replicated, read_max_lag_ms=600_000) as (server, api):
        replica, lookup = _replica(server), server.lookup
        old = [(await create_user(api.admin)).id for _ in range(20)]
        await replicated.caught_up()
        await replicated.pause_replay()
        reads, confirmations = replica.reads, lookup.confirmations
        assert [await api.exists(i) for i in old] == [ACTIVE] * len(old)
        assert await api.batch(old) == [ACTIVE] * len(old)
        assert all([await api.get(i) for i in old])
        # Every old user's answer came from the standby, none needed the primary.
        assert replica.reads >= reads + len(old) * 2 + 1
        assert lookup.confirmations == confirmations

        new = [(await create_user(api.admin)).id for _ in range(30)]
        assert [await api.exists(i) for i in new] == [ACTIVE] * len(new)
        assert await api.batch([*old[:5], *new]) == [ACTIVE] * (5 + len(new))
        assert all([await api.get(i) for i in new])
        # The standby has not replayed them: the primary answered each.
        assert lookup.confirmations >= confirmations + 2 * len(new)
        assert replica.readable  # still read: within the (generous) bound

        # A deletion the standby has not replayed: DELETED is only stale while
        # within the bound, then it is the primary's answer once announced to the
        # cache; either way never NOT_FOUND.
        await delete_user(api.admin, old[0])
        assert await api.exists(old[0]) in (ACTIVE, DELETED)


async def test_a_stopped_standby_is_skipped_within_a_second_or_two_and_read_again_after(
    replicated: Replicated, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="auth_service.store.replicas")
    async with serving(replicated, read_max_lag_ms=1000) as (server, api):
        replica = _replica(server)
        users = [(await create_user(api.admin)).id for _ in range(10)]
        await replicated.caught_up()
        await asyncio.to_thread(replicated.pair.standby.stop)
        loop = asyncio.get_running_loop()
        started = loop.time()
        # Answered throughout, by the primary once the standby is gone.
        assert [await api.exists(i) for i in users] == [ACTIVE] * len(users)
        assert await api.batch(users) == [ACTIVE] * len(users)
        assert all([await api.get(i) for i in users])
        assert loop.time() - started < 2.0
        assert replica.state is ReplicaState.DOWN
        reads = replica.reads
        assert [await api.exists(i) for i in users] == [ACTIVE] * len(users)
        assert replica.reads == reads  # not read while down
        down = [
            r.getMessage()
            for r in caplog.records
            if r.levelno == logging.WARNING and " not read: " in r.getMessage()
        ]
        assert len(down) == 1, down  # said once, however many lookups failed over
        assert f":{replicated.pair.standby.port}" in down[0]

        await asyncio.to_thread(replicated.pair.standby.start)
        await eventually(lambda: _true(replica.readable), timeout=20)
        assert [await api.exists(i) for i in users] == [ACTIVE] * len(users)
        assert replica.reads >= reads + len(users)


async def test_a_standby_behind_the_lag_bound_is_skipped_then_read_again_once_caught_up(
    replicated: Replicated,
) -> None:
    async with serving(replicated, read_max_lag_ms=400, metrics_listen="127.0.0.1:0") as (
        server,
        api,
    ):
        replica = _replica(server)
        users = [(await create_user(api.admin)).id for _ in range(5)]
        await replicated.caught_up()
        await replicated.pause_replay()
        for _ in range(5):  # the primary moves on; the standby does not
            await create_user(api.admin)
        await eventually(lambda: _true(replica.state is ReplicaState.LAGGING), timeout=10)
        assert server.metrics is not None
        scraped = await samples(server.metrics.url)
        label = {"replica": replica.name}
        assert value(scraped, "auth_db_replica_up", **label) == 0
        assert value(scraped, "auth_db_replica_lag_seconds", **label) > 0.4
        reads = replica.reads
        assert [await api.exists(i) for i in users] == [ACTIVE] * len(users)
        assert replica.reads == reads  # the primary answered

        await replicated.resume_replay()
        await eventually(lambda: _true(replica.readable), timeout=10)
        assert [await api.exists(i) for i in users] == [ACTIVE] * len(users)
        assert replica.reads >= reads + len(users)
        scraped = await samples(server.metrics.url)
        assert value(scraped, "auth_db_replica_up", **label) == 1
        assert value(scraped, "auth_db_replica_reads_total", **label) >= len(users)


async def test_two_servers_reading_a_paused_standby_never_call_a_new_user_not_found(
    replicated: Replicated,
) -> None:
    """Server A takes the creations, server B (index and cache on, reading the
    standby, whose replay is paused) is asked at once: never NOT_FOUND."""
    settings = make_settings(
        replicated.primary_url,
        database_read_urls=(replicated.standby_url,),
        read_max_lag_ms=600_000,
        state_index_max_users=1_000_000,
    )
    async with (
        AuthServer(settings) as a,
        AuthServer(settings) as b,
        grpc.aio.insecure_channel(a.address) as to_a,
        grpc.aio.insecure_channel(b.address) as to_b,
    ):
        await eventually(lambda: _true(b.lookup.cache.answers_everything()), timeout=30)
        await replicated.pause_replay()
        admin, read = Stubs(to_a).admin, Stubs(to_b)
        false = []
        for _ in range(200):
            user = (await create_user(admin)).id
            if await read.exists(user) != ACTIVE:
                false.append(user)
        assert false == []


@contextlib.asynccontextmanager
async def serving_cached(
    db: Replicated, **overrides: Any
) -> AsyncIterator[tuple[AuthServer, Stubs]]:
    """A server reading the standby with its state cache on (no index of every
    user, so what memory answers is the cache's), once its change feed listens."""
    async with serving(db, state_cache_size=10_000, **overrides) as (server, api):
        await eventually(lambda: _true(server.lookup.cache.enabled), timeout=20)
        yield server, api


async def test_answers_read_from_the_standby_are_kept_in_the_state_cache(
    replicated: Replicated,
) -> None:
    """A replica's ACTIVE and DELETED answers are kept like the primary's: the same
    users asked again cost the standby nothing (bench: 31% of the replica queries at
    platform scale)."""
    async with serving_cached(replicated) as (server, api):
        replica = _replica(server)
        users = [(await create_user(api.admin)).id for _ in range(10)]
        await delete_user(api.admin, users[0])
        await replicated.caught_up()
        await eventually(lambda: _true(replica.fresh_as_of > 0), timeout=20)
        # Past the announcements of those writes: the standby has replayed them.
        await asyncio.sleep(2 * server.replicas.interval_s)  # type: ignore[union-attr]
        expected = [DELETED] + [ACTIVE] * 9
        assert [await api.exists(i) for i in users] == expected
        reads = replica.reads
        assert reads > 0
        assert [await api.exists(i) for i in users] == expected
        assert await api.batch(users) == expected
        assert replica.reads == reads


async def test_a_standby_answer_older_than_a_deletion_it_has_not_replayed_is_not_kept(
    replicated: Replicated,
) -> None:
    """Replay paused, a user deleted on the primary: the standby still says ACTIVE
    (stale within the lag bound, as documented), and that answer must not stay in
    the cache: once the standby replays the deletion the answer is DELETED, not an
    ACTIVE kept for good (no announcement would ever come to drop it)."""
    async with serving_cached(replicated, read_max_lag_ms=600_000) as (_server, api):
        user = (await create_user(api.admin)).id
        await replicated.caught_up()
        await replicated.pause_replay()
        try:
            await delete_user(api.admin, user)
            await asyncio.sleep(0.2)  # the announcement reaches the cache
            assert await api.exists(user) == ACTIVE  # the standby's stale answer
            assert await api.exists(user) == ACTIVE  # asked of it again: not kept
        finally:
            await replicated.resume_replay()
        await replicated.caught_up()
        assert await api.exists(user) == DELETED
        assert await api.batch([user]) == [DELETED]
