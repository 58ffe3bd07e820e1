"""user_created events through the outbox and the relay (#30 item 1), on both
brokers: published to their own topic, keyed by user id, each user's creation
acknowledged before its deletion is published; a relay that does not publish
them is not held back by them."""

from __future__ import annotations

import dataclasses
import uuid

from auth_client.contract import (
    HEADER_EVENT_TYPE,
    USER_CREATED_TYPE,
    decode_user_created,
    decode_user_deleted,
    header,
)
from auth_service.api.server import AuthServer
from tests.conftest import eventually
from tests.events.conftest import event_settings
from tests.events.support import Collector, admin_stub, create_topic, outbox_rows
from tests.helpers import create_user, delete_user


async def _true(value: bool) -> bool:
    return value


async def test_creations_are_published_to_their_topic_before_the_users_deletions(
    database_url: str, kafka_bootstrap: str, topic: str
) -> None:
    created_topic = f"created-{uuid.uuid4().hex[:8]}"
    await create_topic(kafka_bootstrap, created_topic, 3)
    settings = event_settings(database_url, kafka_bootstrap, topic)
    async with (
        AuthServer(settings, user_created_topic=created_topic) as server,
        admin_stub(server.address) as admin,
        Collector(kafka_bootstrap, created_topic) as creations,
        Collector(kafka_bootstrap, topic) as deletions,
    ):
        ids = [(await create_user(admin)).id for _ in range(5)]
        for user_id in ids[:2]:
            await delete_user(admin, user_id)
        await eventually(lambda: _true(len(creations.records) >= 5), timeout=30)
        await eventually(lambda: _true(len(deletions.records) >= 2), timeout=30)
    created = {}
    for record in creations.records:
        event = decode_user_created(record.value)
        assert record.key.decode() == event.user_id
        assert header(record.headers, HEADER_EVENT_TYPE) == USER_CREATED_TYPE
        created[event.user_id] = (event.position, record.timestamp)
    deleted = {}
    for record in deletions.records:
        event = decode_user_deleted(record.value)
        deleted[event.user_id] = (event.position, record.timestamp)
    assert set(created) == set(ids)
    assert set(deleted) == set(ids[:2])
    positions = sorted(p for p, _ in [*created.values(), *deleted.values()])
    assert positions == list(range(1, 8))
    for user_id in ids[:2]:  # per user: created first, by position and by the brokers' clock
        assert created[user_id][0] < deleted[user_id][0]
        assert created[user_id][1] <= deleted[user_id][1]


async def test_a_relay_without_user_created_events_is_not_held_back_by_them(
    database_url: str, kafka_bootstrap: str, topic: str
) -> None:
    settings = event_settings(database_url, kafka_bootstrap, topic)
    # Events written by a server that has them on ...
    no_relay = dataclasses.replace(settings, relay_enabled=False)
    async with (
        AuthServer(no_relay, user_created_topic="nowhere") as writer,
        admin_stub(writer.address) as admin,
    ):
        user_id = (await create_user(admin)).id
        await delete_user(admin, user_id)
    # ... published by a relay that has them off: the deletion goes, the creation waits.
    async with AuthServer(settings), Collector(kafka_bootstrap, topic) as deletions:
        await eventually(lambda: _true(len(deletions.records) >= 1), timeout=30)
    assert decode_user_deleted(deletions.records[0].value).user_id == user_id
    rows = {row["event_type"]: row for row in await outbox_rows(database_url)}
    assert rows[USER_CREATED_TYPE]["published_at"] is None
