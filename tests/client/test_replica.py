"""A local replica of every user's state (#30 item 3), against a real server, its
relay, PostgreSQL and a broker: ACTIVE and DELETED from memory with no RPC, never
NOT_FOUND from memory, changes seen within the event path's latency, and a reload
(answering through RPCs meanwhile) after a gap or a broker restart."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import asyncpg
import pytest
from aiokafka import AIOKafkaProducer

from auth_client import (
    AuthClient,
    ReplicaConfig,
    ReplicaLoadError,
    SyncAuthClient,
    UserNotFoundError,
    UserState,
)
from auth_client.contract import (
    USER_CREATED_TYPE,
    UserCreatedEvent,
    encode_user_created,
    event_headers,
)
from auth_service.api.server import AuthServer
from auth_service.local.embedded import free_port
from tests.client.conftest import CountingInterceptor, seed_users
from tests.conftest import eventually
from tests.events.conftest import event_settings
from tests.events.support import admin_stub, create_topic
from tests.helpers import ADMIN_TOKEN, create_user, delete_user

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from auth_service.local.broker import EmbeddedKafka

REPLICA_LOG = "auth_client.replica"


async def _true(value: bool) -> bool:
    return value


@dataclass
class Env:
    """A server whose relay publishes both kinds of user event, and their topics."""

    server: AuthServer
    bootstrap: str
    created_topic: str
    deleted_topic: str
    database_url: str

    def config(self, **overrides: Any) -> ReplicaConfig:
        values: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap,
            "created_topic": self.created_topic,
            "deleted_topic": self.deleted_topic,
            "gap_timeout": 0.5,
            "stale_after": 1.0,
            "check_interval": 0.25,
            "max_backoff": 0.5,
            "load_timeout": 20.0,
            **overrides,
        }
        return ReplicaConfig(**values)

    async def create_topics(self) -> None:
        for topic in (self.created_topic, self.deleted_topic):
            await create_topic(self.bootstrap, topic, 3)

    async def last_position(self) -> int:
        conn = await asyncpg.connect(self.database_url)
        try:
            position: int = await conn.fetchval("SELECT last_position FROM event_position")
            return position
        finally:
            await conn.close()


@contextlib.asynccontextmanager
async def _env(database_url: str, bootstrap: str) -> AsyncIterator[Env]:
    suffix = uuid.uuid4().hex[:8]
    created, deleted = f"created-{suffix}", f"deleted-{suffix}"
    for topic in (created, deleted):
        await create_topic(bootstrap, topic, 3)
    settings = event_settings(database_url, bootstrap, deleted, relay_poll_interval_s=0.2)
    async with AuthServer(settings, user_created_topic=created) as server:
        yield Env(server, bootstrap, created, deleted, database_url)


@pytest.fixture
async def env(database_url: str, kafka_bootstrap: str) -> AsyncIterator[Env]:
    async with _env(database_url, kafka_bootstrap) as made:
        yield made


@contextlib.asynccontextmanager
async def _client(
    env: Env, counter: CountingInterceptor, **replica: Any
) -> AsyncIterator[AuthClient]:
    async with AuthClient(
        env.server.address,
        token=ADMIN_TOKEN,
        interceptors=[counter],
        timeout=5.0,
        replica=env.config(**replica),
    ) as client:
        yield client


async def _visible(client: AuthClient, position: int, timeout: float = 2.0) -> float:
    """Seconds until the replica has applied every event up to `position`."""
    started = time.monotonic()

    async def applied() -> bool:
        stats = client.replica_stats()
        return stats is not None and stats.position >= position

    await eventually(applied, timeout=timeout, interval=0.005)
    return time.monotonic() - started


async def test_known_users_are_answered_from_memory_without_an_rpc(
    env: Env, counter: CountingInterceptor
) -> None:
    active, deleted = await seed_users(env.database_url, 300, 20)
    async with _client(env, counter) as client:
        for user_id in active:
            assert await client.user_exists(user_id)
            await client.require_user(str(user_id))
        for user_id in deleted:
            assert not await client.user_exists(user_id)
        with pytest.raises(UserNotFoundError):
            await client.require_users([*active[:3], deleted[0]])
        assert all((await client.users_exist(active)).values())
        states = await client.user_states([*active, *deleted])
        assert [states[u] for u in active] == [UserState.ACTIVE] * 300
        assert [states[u] for u in deleted] == [UserState.DELETED] * 20
        assert counter.total == 0
        stats = client.stats()
        assert stats.rpcs == 0
        assert stats.replica_hits >= 300 * 2 + 20
        replica = client.replica_stats()
        assert replica is not None
        assert (replica.state, replica.users, replica.deleted, replica.loads) == (
            "following",
            320,
            20,
            1,
        )
        assert replica.bytes / replica.users <= 20


async def test_an_id_the_replica_does_not_know_is_asked_never_answered_not_found(
    env: Env, counter: CountingInterceptor
) -> None:
    async with _client(env, counter) as client, admin_stub(env.server.address) as admin:
        # Created by hand (no event at all): the replica never hears of it.
        [by_hand], _ = await seed_users(env.database_url, 1)
        assert await client.user_exists(by_hand)
        assert counter.total == 1
        # Created through the API and asked at once: memory or an RPC, never "no".
        for _ in range(30):
            user_id = (await create_user(admin)).id
            assert await client.user_exists(user_id)
        nobody = uuid.uuid4()
        assert not await client.user_exists(nobody)
        assert (await client.user_states([nobody]))[nobody] is UserState.NOT_FOUND
        assert counter.total >= 3  # by hand, nobody twice (the others: memory or RPC)


async def test_creations_and_deletions_afterwards_are_seen_within_2s_without_an_rpc(
    env: Env, counter: CountingInterceptor
) -> None:
    async with _client(env, counter) as client, admin_stub(env.server.address) as admin:
        waits = []
        for _ in range(5):
            user_id = (await create_user(admin)).id
            waits.append(await _visible(client, await env.last_position()))
            before = counter.total
            assert await client.user_exists(user_id)
            await delete_user(admin, user_id)
            waits.append(await _visible(client, await env.last_position()))
            assert not await client.user_exists(user_id)
            assert counter.total == before
        assert max(waits) < 2.0


async def test_a_gap_in_the_events_makes_the_replica_reload(
    env: Env, counter: CountingInterceptor, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=REPLICA_LOG)
    active, _ = await seed_users(env.database_url, 50)
    async with _client(env, counter) as client, admin_stub(env.server.address) as admin:
        # An event two positions ahead, as if the one between had been lost.
        ghost = uuid.uuid4()
        position = await env.last_position() + 2
        await _produce_created(env, ghost, position)
        await eventually(lambda: _reloaded(client, 1), timeout=10)
        stats = client.replica_stats()
        assert stats is not None
        assert stats.last_reload_reason is not None
        assert "missing" in stats.last_reload_reason
        assert any("reloading" in r.getMessage() for r in caplog.records)
        # Reloaded and right: the ghost is unknown (asked), the others from memory.
        before = counter.total
        assert all((await client.users_exist(active)).values())
        assert counter.total == before
        user_id = (await create_user(admin)).id
        await _visible(client, await env.last_position())
        assert await client.user_exists(user_id)
        assert counter.total == before


async def _reloaded(client: AuthClient, reloads: int) -> bool:
    stats = client.replica_stats()
    return (
        stats is not None
        and stats.reloads >= reloads
        and stats.loads >= reloads + 1
        and stats.state == "following"
    )


async def _produce_created(env: Env, user_id: uuid.UUID, position: int) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=env.bootstrap)
    await producer.start()
    try:
        event_id = str(uuid.uuid4())
        now = datetime.now(UTC)
        await producer.send_and_wait(
            env.created_topic,
            encode_user_created(
                UserCreatedEvent(event_id, str(user_id), now, now, position=position)
            ),
            key=str(user_id).encode(),
            headers=event_headers(event_id, USER_CREATED_TYPE),
        )
    finally:
        await producer.stop()


async def test_a_broker_restart_makes_the_replica_answer_through_rpcs_then_reload(
    database_url: str, private_kafka: EmbeddedKafka, counter: CountingInterceptor
) -> None:
    active, _ = await seed_users(database_url, 20)
    async with (
        _env(database_url, private_kafka.bootstrap_servers) as env,
        _client(env, counter) as client,
        admin_stub(env.server.address) as admin,
    ):
        doomed = (await create_user(admin)).id
        await _visible(client, await env.last_position())
        assert counter.total == 0

        await asyncio.to_thread(private_kafka.stop)
        await eventually(lambda: _true(not client.replica_stats().answering), timeout=10)  # type: ignore[union-attr]
        # Meanwhile: every ACTIVE is auth-service's answer, and right.
        await delete_user(admin, doomed)  # its event waits in the outbox
        assert not await client.user_exists(doomed)
        assert await client.user_exists(active[0])
        assert counter.total == 2

        await asyncio.to_thread(private_kafka.start)  # empty: ops create the topics again
        await env.create_topics()
        await eventually(lambda: _reloaded(client, 1), timeout=30)
        before = counter.total
        assert not await client.user_exists(doomed)
        assert all((await client.users_exist(active)).values())
        assert counter.total == before


async def test_a_sync_client_answers_from_the_replica_in_its_callers_threads(
    env: Env,
) -> None:
    active, deleted = await seed_users(env.database_url, 300, 5)

    def use() -> tuple[int, int]:
        with SyncAuthClient(
            env.server.address, token=ADMIN_TOKEN, timeout=5.0, replica=env.config()
        ) as client:
            assert all(client.user_exists(user_id) for user_id in active)
            assert not any(client.user_exists(user_id) for user_id in deleted)
            assert client.user_exists(uuid.uuid4()) is False  # asked: one RPC
            stats = client.stats()
            return stats.rpcs, stats.replica_hits

    rpcs, hits = await asyncio.to_thread(use)
    assert (rpcs, hits) == (1, 305)


async def test_no_broker_is_a_clear_error_when_the_client_opens(env: Env) -> None:
    where = f"127.0.0.1:{free_port()}"
    client = AuthClient(
        env.server.address, token=ADMIN_TOKEN, replica=env.config(bootstrap_servers=where)
    )
    with pytest.raises(ReplicaLoadError) as info:
        async with client:
            pass
    assert where in str(info.value)
    with pytest.raises(RuntimeError, match="closed"):
        await client.user_exists(uuid.uuid4())
    missing = env.config(created_topic="no-such-topic")
    with pytest.raises(ReplicaLoadError, match="'no-such-topic' does not exist"):
        async with AuthClient(env.server.address, token=ADMIN_TOKEN, replica=missing):
            pass


async def test_over_max_users_the_replica_is_off_and_said_so_once(
    env: Env, counter: CountingInterceptor, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=REPLICA_LOG)
    active, _ = await seed_users(env.database_url, 30)
    async with _client(env, counter, max_users=10, page_size=8) as client:
        assert await client.user_exists(active[0])
        assert counter.total == 1
        stats = client.replica_stats()
        assert stats is not None
        assert (stats.state, stats.users) == ("off", 0)
    lines = [r for r in caplog.records if "max_users" in r.getMessage()]
    assert len(lines) == 1
    assert lines[0].levelno == logging.ERROR
