"""Faults on the way to Kafka: a broker that goes away, a relay that dies between
publish and mark. Nothing is lost; duplicates are absorbed by event-id dedupe."""

from __future__ import annotations

import asyncio
import uuid
from typing import TYPE_CHECKING, Any

import asyncpg
from prometheus_client import REGISTRY

from auth_service.api.server import AuthServer
from auth_service.events.relay import Relay
from auth_service.events.relay_config import RelayConfig
from auth_service.store.outbox import write_event
from tests.conftest import eventually, make_settings
from tests.events.conftest import event_settings
from tests.events.support import Collector, admin_stub, outbox_rows, received, running
from tests.helpers import create_user, delete_user

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from auth_service.local.broker import EmbeddedKafka
    from auth_service.local.embedded import EmbeddedPostgres
    from auth_service.store.outbox import OutboxRecord


def _metric(name: str) -> float:
    value = REGISTRY.get_sample_value(name)
    return 0.0 if value is None else value


async def _count(url: str, sql: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        return int(await conn.fetchval(sql))
    finally:
        await conn.close()


def _consumer_args(bootstrap: str, topic: str, dedupe_url: str) -> tuple[str, ...]:
    group = f"g-{uuid.uuid4().hex[:8]}"
    return (
        *("toolkit", "--bootstrap", bootstrap, "--topic", topic),
        *("--group", group, "--dedupe-url", dedupe_url),
    )


async def test_broker_down_then_back_delivers_all_100_events(
    database_url: str, new_database: Callable[[], str], private_kafka: EmbeddedKafka
) -> None:
    topic = "user_deleted"
    bootstrap = private_kafka.bootstrap_servers
    settings = event_settings(database_url, bootstrap, topic, relay_batch_size=20)
    failed_before = _metric("outbox_events_failed_total")
    async with AuthServer(settings) as server, admin_stub(server.address) as admin:
        relay = server.relay
        assert relay is not None
        users = [(await create_user(admin)).id for _ in range(100)]
        await eventually(lambda: _true(relay.listening), timeout=20)

        await asyncio.to_thread(private_kafka.stop)
        for user_id in users:
            await delete_user(admin, user_id)  # deletions never wait for Kafka

        # The rows wait in the outbox; lag and failures are visible.
        await eventually(lambda: _true(_metric("outbox_events_failed_total") > failed_before), 30)
        await eventually(lambda: _true(_metric("outbox_unpublished_rows") == 100), timeout=30)
        assert _metric("outbox_oldest_unpublished_age_seconds") > 0
        assert relay.published == 0
        assert all(r["published_at"] is None for r in await outbox_rows(database_url))

        # The same port again; the embedded broker comes back empty.
        await asyncio.to_thread(private_kafka.start)
        await eventually(lambda: _true(relay.published >= 100), timeout=90)
        await eventually(lambda: _true(_metric("outbox_unpublished_rows") == 0), timeout=30)
    rows = await outbox_rows(database_url)
    assert len(rows) == 100
    assert all(r["published_at"] is not None for r in rows)
    assert {r["partition_key"] for r in rows} == set(users)

    dedupe_url = new_database()
    args = _consumer_args(bootstrap, topic, dedupe_url)
    async with running("tests.events.proc_consumer", *args) as proc:
        await proc.wait_for(lambda lines: len({e["user_id"] for e in received(lines)}) >= 100, 90)
        await asyncio.sleep(1.0)
    deliveries = received(proc.lines)
    assert {e["user_id"] for e in deliveries} == set(users)
    assert {e["event_id"] for e in deliveries} == {str(r["event_id"]) for r in rows}
    # Each user's cleanup ran exactly once, whatever was delivered twice.
    assert await _count(dedupe_url, "SELECT count(*) FROM effects") == 100
    assert await _count(dedupe_url, "SELECT count(DISTINCT user_id) FROM effects") == 100
    assert await _count(dedupe_url, "SELECT count(*) FROM processed_events") == 100


async def test_relay_killed_between_publish_and_mark_resends_and_dedupe_absorbs_it(
    database_url: str, new_database: Callable[[], str], kafka_bootstrap: str, topic: str
) -> None:
    async with AuthServer(make_settings(database_url)) as server:  # no relay inside
        async with admin_stub(server.address) as admin:
            user_id = (await create_user(admin)).id
            await delete_user(admin, user_id)
    [row] = await outbox_rows(database_url)
    event_id = str(row["event_id"])

    dedupe_url = new_database()
    args = _consumer_args(kafka_bootstrap, topic, dedupe_url)
    async with running("tests.events.proc_consumer", *args) as consumer:
        relay_args = ("--database-url", database_url, "--bootstrap", kafka_bootstrap)
        relay_args += ("--topic", topic)
        async with running("tests.events.proc_relay", *relay_args) as dying:
            await dying.wait_for(lambda lines: any("published" in line for line in lines))
            assert dying.lines[-1]["published"] == [event_id]
            await dying.kill()
        # Acknowledged by Kafka, but never marked: the row is still unpublished.
        [row] = await outbox_rows(database_url)
        assert row["published_at"] is None

        config = RelayConfig.from_settings(event_settings(database_url, kafka_bootstrap, topic))
        async with Relay(config) as relay:
            await eventually(lambda: _true(relay.published == 1), timeout=60)
        [row] = await outbox_rows(database_url)
        assert row["published_at"] is not None

        def both_copies(lines: list[dict[str, Any]]) -> bool:
            return sum(e["event_id"] == event_id for e in received(lines)) >= 2

        await consumer.wait_for(both_copies, timeout=60)
    # Delivered twice, cleaned up once.
    assert await _count(dedupe_url, "SELECT count(*) FROM effects") == 1
    assert await _count(dedupe_url, "SELECT count(*) FROM processed_events") == 1


async def test_postgres_gone_between_publish_and_mark_resends_after_it_is_back(
    private_postgres: EmbeddedPostgres, kafka_bootstrap: str, topic: str
) -> None:
    url = private_postgres.url
    conn = await asyncpg.connect(url)
    try:
        async with conn.transaction():
            event_id = await write_event(
                conn, event_type="auth.v1.UserDeleted", key=str(uuid.uuid4()), payload=b"\x0a\x00"
            )
    finally:
        await conn.close()
    calls = 0

    async def stop_postgres_once(records: Sequence[OutboxRecord]) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:  # acknowledged by Kafka; now the mark cannot be written
            await asyncio.to_thread(private_postgres.stop)

    config = RelayConfig.from_settings(event_settings(url, kafka_bootstrap, topic))
    async with Collector(kafka_bootstrap, topic) as seen:
        async with Relay(config, on_published=stop_postgres_once) as relay:
            await eventually(lambda: _true(calls == 1 and not private_postgres.running), 60)
            await asyncio.sleep(1.0)  # the relay fails to mark and backs off
            assert relay.published == 0
            await asyncio.to_thread(private_postgres.start)
            await eventually(lambda: _true(relay.published == 1), timeout=60)

        def copies():
            return [
                r for r in seen.records if dict(r.headers)["event-id"] == str(event_id).encode()
            ]

        await eventually(lambda: _true(len(copies()) == 2), timeout=30)
    [row] = await outbox_rows(url)
    assert row["published_at"] is not None
    assert calls == 2


async def _true(value: bool) -> bool:
    return value
