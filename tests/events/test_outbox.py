"""DeleteUser and the outbox: a committed deletion has exactly one event, delivered
to a consumer in another process; a rolled-back one has none."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import grpc
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from auth_client.contract import events_pb2
from auth_service.api.server import AuthServer
from auth_service.store.outbox import write_user_deleted
from auth_service.store.pool import Budget
from auth_service.store.users import Deletion, UserRepository
from tests.conftest import eventually, make_settings
from tests.events.support import Collector, admin_stub, describe_topic, outbox_rows, running
from tests.helpers import create_user, delete_user


async def test_delete_reaches_a_consumer_in_another_process(
    events_server: AuthServer, database_url: str, kafka_bootstrap: str, topic: str
) -> None:
    async with admin_stub(events_server.address) as admin:
        user_id = (await create_user(admin)).id
        group = f"g-{uuid.uuid4().hex[:8]}"
        args = ("raw", "--bootstrap", kafka_bootstrap, "--topic", topic, "--group", group)
        async with running("tests.events.proc_consumer", *args) as proc:
            await proc.wait_for(lambda lines: any(line.get("ready") for line in lines))
            reply = await delete_user(admin, user_id)
            await proc.wait_for(lambda lines: any("event_id" in line for line in lines))
            # Nothing else arrives: one deletion, one event.
            assert await _all_published(events_server, kafka_bootstrap, topic) == 1
            events = [line for line in proc.lines if "event_id" in line]

    assert len(events) == 1
    event = events[0]
    assert event["key"] == user_id
    assert event["user_id"] == user_id
    assert event["deleted_at"] == reply.deleted_at.ToJsonString()
    assert event["schema_version"] == 1
    assert uuid.UUID(event["event_id"])
    assert event["headers"] == {
        "event-id": event["event_id"],
        "event-type": "auth.v1.UserDeleted",
        "content-type": "application/x-protobuf",
    }
    # The deleted user only: nothing about the admin who deleted it.
    assert event["fields"] == ["deleted_at", "event_id", "occurred_at", "schema_version", "user_id"]
    rows = await outbox_rows(database_url)
    assert [str(r["event_id"]) for r in rows] == [event["event_id"]]
    assert rows[0]["published_at"] is not None
    decoded = events_pb2.UserDeleted.FromString(rows[0]["payload"])
    assert decoded.user_id == user_id


async def test_rolled_back_deletion_produces_no_event(
    events_server: AuthServer, database_url: str, kafka_bootstrap: str, topic: str
) -> None:
    async with admin_stub(events_server.address) as admin:
        rolled_back = (await create_user(admin)).id
        committed = (await create_user(admin)).id
        conn = await asyncpg.connect(database_url)
        try:
            with pytest.raises(RuntimeError, match="abort"):
                async with conn.transaction():
                    deletion = await UserRepository.soft_delete(
                        conn, uuid.UUID(rolled_back), Budget(5.0)
                    )
                    assert deletion is not None
                    await write_user_deleted(conn, deletion)
                    raise RuntimeError("abort")
            still_active = await conn.fetchval(
                "SELECT deleted_at IS NULL FROM users WHERE id = $1", uuid.UUID(rolled_back)
            )
        finally:
            await conn.close()
        assert still_active is True

        async with Collector(kafka_bootstrap, topic) as seen:
            await delete_user(admin, committed)
            await eventually(lambda: _has(seen, 1), timeout=30)
            assert await _all_published(events_server, kafka_bootstrap, topic) == 1
            assert seen.user_ids() == [committed]
    assert [r["partition_key"] for r in await outbox_rows(database_url)] == [committed]


async def test_failing_hook_rolls_back_the_soft_delete(database_url: str) -> None:
    """The outbox row and the soft delete share DeleteUser's transaction."""

    async def write_then_fail(conn: asyncpg.Connection, deletion: Deletion) -> None:
        await write_user_deleted(conn, deletion)
        raise RuntimeError("the transaction must roll back")

    async with AuthServer(make_settings(database_url), on_deleted=write_then_fail) as server:
        async with admin_stub(server.address) as admin:
            user_id = (await create_user(admin)).id
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await delete_user(admin, user_id)
            assert info.value.code() == grpc.StatusCode.INTERNAL
    conn = await asyncpg.connect(database_url)
    try:
        active = await conn.fetchval(
            "SELECT deleted_at IS NULL FROM users WHERE id = $1", uuid.UUID(user_id)
        )
    finally:
        await conn.close()
    assert active is True
    assert await outbox_rows(database_url) == []


async def test_second_delete_produces_no_second_event(
    events_server: AuthServer, database_url: str, kafka_bootstrap: str, topic: str
) -> None:
    async with admin_stub(events_server.address) as admin:
        twice = (await create_user(admin)).id
        other = (await create_user(admin)).id
        async with Collector(kafka_bootstrap, topic) as seen:
            first = await delete_user(admin, twice)
            second = await delete_user(admin, twice)
            assert (first.already_deleted, second.already_deleted) == (False, True)
            await delete_user(admin, other)
            await eventually(lambda: _has(seen, 2), timeout=30)
            assert await _all_published(events_server, kafka_bootstrap, topic) == 2
            assert sorted(seen.user_ids()) == sorted([twice, other])
    assert len(await outbox_rows(database_url)) == 2


async def test_concurrent_deletes_of_one_user_write_one_event(database_url: str) -> None:
    async with AuthServer(make_settings(database_url, pool_max_size=10)) as server:
        async with admin_stub(server.address) as admin:
            user_id = (await create_user(admin)).id
            replies = await asyncio.gather(*(delete_user(admin, user_id) for _ in range(8)))
    assert sum(not r.already_deleted for r in replies) == 1
    rows = await outbox_rows(database_url)
    assert [r["partition_key"] for r in rows] == [user_id]
    # Without a relay (no Kafka configured) the event waits in the outbox.
    assert rows[0]["published_at"] is None


async def _has(collector: Collector, count: int) -> bool:
    return len(collector.records) >= count


async def _all_published(server: AuthServer, bootstrap: str, topic: str) -> int:
    """How many messages `topic` holds once the server's relay has published all it
    ever will for what has committed so far: two more claim cycles finished, so the
    second began after this call and saw every committed row. (Instead of sleeping
    and hoping that a second event would have arrived by then.)"""
    relay = server.relay
    assert relay is not None
    polls = relay.polls
    await eventually(lambda: _true(relay.polls >= polls + 2), timeout=30)
    described = await describe_topic(bootstrap, topic)
    partitions = [TopicPartition(topic, p["partition"]) for p in described["partitions"]]
    assert partitions, topic
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        ends = await consumer.end_offsets(partitions)
        starts = await consumer.beginning_offsets(partitions)
    finally:
        await consumer.stop()
    return sum(ends[tp] - starts[tp] for tp in partitions)


async def _true(value: bool) -> bool:
    return value
