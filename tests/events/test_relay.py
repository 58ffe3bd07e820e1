"""The relay: NOTIFY wake-up with a re-established LISTEN, polling fallback, two
relays on one outbox with per-key order, pruning."""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import asyncpg

from auth_client.events import UserDeletedEvent, decode_user_deleted, encode_user_deleted
from auth_service.api.server import AuthServer
from auth_service.events.relay import LISTEN_APPLICATION_NAME, Relay
from auth_service.events.relay_config import RelayConfig
from auth_service.store.outbox import OutboxStore, write_event
from tests.conftest import eventually, make_settings
from tests.events.conftest import event_settings
from tests.events.support import Collector, admin_stub, outbox_rows
from tests.helpers import create_user, delete_user

if TYPE_CHECKING:
    from collections.abc import Sequence

    from auth_service.store.outbox import OutboxRecord


async def test_notify_wakes_the_relay_and_a_dropped_listen_is_re_established(
    database_url: str, kafka_bootstrap: str, topic: str
) -> None:
    # Polling every 10 minutes: only NOTIFY can deliver within the test.
    settings = event_settings(database_url, kafka_bootstrap, topic, relay_poll_interval_s=600)
    async with AuthServer(settings) as server, admin_stub(server.address) as admin:
        relay = server.relay
        assert relay is not None
        first, second = (await create_user(admin)).id, (await create_user(admin)).id
        async with Collector(kafka_bootstrap, topic) as seen:
            await eventually(lambda: _true(relay.listening), timeout=20)
            await delete_user(admin, first)
            await eventually(lambda: _true(seen.user_ids() == [first]), timeout=30)

            # Kill the LISTEN connection server-side; the relay notices and listens again.
            conn = await asyncpg.connect(database_url)
            try:
                killed = await conn.fetchval(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                    " WHERE application_name = $1 AND datname = current_database()",
                    LISTEN_APPLICATION_NAME,
                )
            finally:
                await conn.close()
            assert killed == 1
            await eventually(lambda: _true(relay.listen_sessions == 2), timeout=30)
            await eventually(lambda: _true(relay.listening), timeout=30)

            await delete_user(admin, second)
            await eventually(lambda: _true(seen.user_ids() == [first, second]), timeout=30)


async def test_polling_publishes_rows_whose_notify_never_came(
    database_url: str, kafka_bootstrap: str, topic: str
) -> None:
    settings = event_settings(database_url, kafka_bootstrap, topic, relay_poll_interval_s=0.3)
    async with AuthServer(settings) as server, Collector(kafka_bootstrap, topic) as seen:
        assert server.relay is not None
        await eventually(lambda: _true(server.relay is not None and server.relay.listening))
        user_id = str(uuid.uuid4())
        conn = await asyncpg.connect(database_url)
        try:
            async with conn.transaction():
                await _write(conn, user_id, notify=False)
        finally:
            await conn.close()
        await eventually(lambda: _true(seen.user_ids() == [user_id]), timeout=30)


async def test_two_relays_deliver_everything_and_keep_per_user_order(
    database_url: str, kafka_bootstrap: str, topic: str
) -> None:
    # 12 users with 5 events each, committed interleaved (the mechanism must hold
    # if more event types per user come), plus 30 real deletions.
    keys = [str(uuid.uuid4()) for _ in range(12)]
    conn = await asyncpg.connect(database_url)
    try:
        for _ in range(5):
            for key in keys:
                async with conn.transaction():
                    await _write(conn, key)
    finally:
        await conn.close()
    async with AuthServer(make_settings(database_url)) as server:
        async with admin_stub(server.address) as admin:
            users = [(await create_user(admin)).id for _ in range(30)]
            for user_id in users:
                await delete_user(admin, user_id)
    expected = await outbox_rows(database_url)
    assert len(expected) == 90

    async def slow(records: Sequence[OutboxRecord]) -> None:
        await asyncio.sleep(0.05)  # give the other relay a share of the work

    config = RelayConfig.from_settings(
        event_settings(database_url, kafka_bootstrap, topic, relay_batch_size=4)
    )
    async with Collector(kafka_bootstrap, topic) as seen:
        async with (
            Relay(config, on_published=slow) as one,
            Relay(config, on_published=slow) as two,
        ):
            await eventually(lambda: _true(one.published + two.published >= 90), timeout=90)
            await eventually(lambda: _true(len(set(seen.event_ids())) >= 90), timeout=60)
        assert one.published > 0
        assert two.published > 0
        assert one.published + two.published == 90

        received_by_key: dict[str, list[str]] = defaultdict(list)
        for record in seen.records:
            event = decode_user_deleted(record.value)
            assert record.key.decode() == event.user_id
            if event.event_id not in received_by_key[event.user_id]:
                received_by_key[event.user_id].append(event.event_id)
    expected_by_key: dict[str, list[str]] = defaultdict(list)
    for row in expected:
        expected_by_key[row["partition_key"]].append(str(row["event_id"]))
    assert received_by_key == expected_by_key
    assert all(row["published_at"] is not None for row in await outbox_rows(database_url))


async def test_prune_deletes_only_published_rows_past_retention(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        async with conn.transaction():
            old_published = await _write(conn, str(uuid.uuid4()))
            recent_published = await _write(conn, str(uuid.uuid4()))
            old_unpublished = await _write(conn, str(uuid.uuid4()))
        await conn.execute(
            "UPDATE outbox SET published_at = now() - interval '8 days',"
            " created_at = now() - interval '8 days' WHERE event_id = $1",
            old_published,
        )
        await conn.execute(
            "UPDATE outbox SET published_at = now() WHERE event_id = $1", recent_published
        )
        await conn.execute(
            "UPDATE outbox SET created_at = now() - interval '8 days' WHERE event_id = $1",
            old_unpublished,
        )
        pruned = await OutboxStore.prune(conn, retention_s=7 * 24 * 3600)
        lag = await OutboxStore.lag(conn)
    finally:
        await conn.close()
    assert pruned == 1
    remaining = {r["event_id"] for r in await outbox_rows(database_url)}
    assert remaining == {recent_published, old_unpublished}
    assert lag.unpublished == 1
    assert lag.oldest_age_s > 7 * 24 * 3600


async def _write(conn: asyncpg.Connection, user_id: str, *, notify: bool = True) -> uuid.UUID:
    event_id = uuid.uuid4()
    now = datetime.now(UTC)
    payload = encode_user_deleted(
        UserDeletedEvent(str(event_id), user_id, deleted_at=now, occurred_at=now)
    )
    return await write_event(
        conn,
        event_type="auth.v1.UserDeleted",
        key=user_id,
        payload=payload,
        event_id=event_id,
        notify=notify,
    )


async def _true(value: bool) -> bool:
    return value
