"""UserDeletedConsumer against the real broker: retries then DLQ, partition moves
on; redelivery after a crash before commit; graceful stop; rebalances."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import Counter
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import asyncpg
from aiokafka import AIOKafkaProducer

from auth_client.events import (
    ProcessedEvents,
    RetryPolicy,
    UserDeletedConsumer,
    UserDeletedEvent,
    deduplicated,
    encode_user_deleted,
    user_deleted_headers,
)
from tests.conftest import eventually
from tests.events.support import Collector, consuming, create_topic, group, running

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable


def make_event(user_id: str | None = None) -> UserDeletedEvent:
    now = datetime.now(UTC)
    return UserDeletedEvent(
        event_id=str(uuid.uuid4()),
        user_id=user_id or str(uuid.uuid4()),
        deleted_at=now,
        occurred_at=now,
    )


async def produce(bootstrap: str, topic: str, *events: UserDeletedEvent | bytes) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for event in events:
            if isinstance(event, bytes):
                await producer.send_and_wait(topic, value=event, key=b"garbage")
            else:
                await producer.send_and_wait(
                    topic,
                    value=encode_user_deleted(event),
                    key=event.user_id.encode(),
                    headers=user_deleted_headers(event.event_id),
                )
    finally:
        await producer.stop()


async def test_failing_handler_is_retried_then_dead_lettered_and_the_partition_moves_on(
    kafka_bootstrap: str, topic_name: str
) -> None:
    await create_topic(kafka_bootstrap, topic_name, 1)
    poison, after1, after2 = make_event(), make_event(), make_event()
    attempts: Counter[str] = Counter()
    handled: list[str] = []

    async def handler(event: UserDeletedEvent) -> None:
        attempts[event.event_id] += 1
        if event.event_id == poison.event_id:
            raise ValueError("cannot clean up this one")
        handled.append(event.event_id)

    g = group()
    retry = RetryPolicy(max_attempts=3, initial_backoff_s=0.05, max_backoff_s=0.2)
    async with Collector(kafka_bootstrap, f"{topic_name}.dlq") as dlq:
        await produce(kafka_bootstrap, topic_name, poison, after1, after2)
        async with consuming(handler, kafka_bootstrap, topic_name, g, retry=retry) as consumer:
            await eventually(lambda: _true(len(handled) == 2), timeout=60)
            await eventually(lambda: _true(len(dlq.records) == 1), timeout=30)
        assert handled == [after1.event_id, after2.event_id]
        assert attempts[poison.event_id] == 3
        assert (consumer.stats.retries, consumer.stats.dead_lettered) == (2, 1)
        [dead] = dlq.records
        headers = {k: v.decode() for k, v in dead.headers}
        assert dead.key == poison.user_id.encode()
        assert dead.value == encode_user_deleted(poison)
        assert headers["event-id"] == poison.event_id
        assert headers["dlq-error"] == "ValueError: cannot clean up this one"
        assert headers["dlq-attempts"] == "3"
        assert headers["dlq-source-topic"] == topic_name
        assert headers["dlq-source-offset"] == "0"
        assert headers["dlq-consumer-group"] == g

    # Offsets were committed past the poison event: the group does not see it again.
    again: list[str] = []

    async def record(event: UserDeletedEvent) -> None:
        again.append(event.event_id)

    late = make_event()
    await produce(kafka_bootstrap, topic_name, late)
    async with consuming(record, kafka_bootstrap, topic_name, g):
        await eventually(lambda: _true(late.event_id in again), timeout=60)
    assert again == [late.event_id]


async def test_undecodable_message_goes_to_the_dlq_without_calling_the_handler(
    kafka_bootstrap: str, topic_name: str
) -> None:
    await create_topic(kafka_bootstrap, topic_name, 1)
    good = make_event()
    seen: list[str] = []

    async def handler(event: UserDeletedEvent) -> None:
        seen.append(event.event_id)

    async with Collector(kafka_bootstrap, f"{topic_name}.dlq") as dlq:
        await produce(kafka_bootstrap, topic_name, b"\xff\x00not a protobuf", good)
        async with consuming(handler, kafka_bootstrap, topic_name, group()):
            await eventually(lambda: _true(seen == [good.event_id]), timeout=60)
            await eventually(lambda: _true(len(dlq.records) == 1), timeout=30)
        headers = dict(dlq.records[0].headers)
        assert headers["dlq-error-type"] == b"EventDecodeError"
        assert headers["dlq-attempts"] == b"0"


async def test_consumer_killed_before_commit_the_event_goes_to_the_next_member(
    kafka_bootstrap: str, topic: str
) -> None:
    event = make_event()
    g = group()
    args = ("toolkit", "--bootstrap", kafka_bootstrap, "--topic", topic, "--group", g, "--hang")
    async with running("tests.events.proc_consumer", *args) as doomed:
        await doomed.wait_for(lambda lines: any(line.get("ready") for line in lines))
        await produce(kafka_bootstrap, topic, event)
        await doomed.wait_for(lambda lines: any("hanging" in line for line in lines), timeout=60)
        assert doomed.lines[-1]["hanging"]["event_id"] == event.event_id
        await doomed.kill()

    got: list[UserDeletedEvent] = []

    async def handler(e: UserDeletedEvent) -> None:
        got.append(e)

    async with consuming(handler, kafka_bootstrap, topic, g):
        await eventually(lambda: _true(len(got) >= 1), timeout=90)
    assert [e.event_id for e in got] == [event.event_id]
    assert got[0].user_id == event.user_id


async def test_stop_finishes_the_event_in_progress_and_commits_it(
    kafka_bootstrap: str, topic: str
) -> None:
    event = make_event()
    started, finished = asyncio.Event(), asyncio.Event()

    async def slow(e: UserDeletedEvent) -> None:
        started.set()
        await asyncio.sleep(1.0)
        finished.set()

    g = group()
    await produce(kafka_bootstrap, topic, event)
    consumer = UserDeletedConsumer(slow, bootstrap_servers=kafka_bootstrap, group_id=g, topic=topic)
    async with consumer:
        task = asyncio.create_task(consumer.run())
        await asyncio.wait_for(started.wait(), 60)
        consumer.stop()
        await asyncio.wait_for(task, 30)
        assert finished.is_set()
    assert consumer.stats.handled == 1

    again: list[str] = []

    async def record(e: UserDeletedEvent) -> None:
        again.append(e.event_id)

    marker = make_event()
    await produce(kafka_bootstrap, topic, marker)
    async with consuming(record, kafka_bootstrap, topic, g):
        await eventually(lambda: _true(marker.event_id in again), timeout=60)
    assert again == [marker.event_id]


async def test_rebalance_commits_handled_offsets_before_partitions_move(
    kafka_bootstrap: str, topic: str
) -> None:
    events = [make_event() for _ in range(60)]
    by_member: dict[str, list[str]] = {"a": [], "b": []}

    def handler_for(name: str) -> Callable[[UserDeletedEvent], Awaitable[None]]:
        async def handle(e: UserDeletedEvent) -> None:
            await asyncio.sleep(0.05)
            by_member[name].append(e.event_id)

        return handle

    g = group()
    await produce(kafka_bootstrap, topic, *events[:30])
    async with consuming(handler_for("a"), kafka_bootstrap, topic, g):
        await eventually(lambda: _true(len(by_member["a"]) >= 5), timeout=60)
        async with consuming(handler_for("b"), kafka_bootstrap, topic, g):
            await produce(kafka_bootstrap, topic, *events[30:])
            handled = lambda: {*by_member["a"], *by_member["b"]}  # noqa: E731
            await eventually(lambda: _true(len(handled()) == 60), timeout=90)
            assert by_member["b"], "the second member never got a partition"
    assert {*by_member["a"], *by_member["b"]} == {e.event_id for e in events}
    # What A had handled before giving a partition up was committed in the
    # rebalance listener, so B did not handle it again.
    assert set(by_member["a"]) & set(by_member["b"]) == set()


async def test_dedupe_runs_the_cleanup_once_per_event_id(database_url: str) -> None:
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=4)
    try:
        processed = ProcessedEvents("processed_events")
        async with pool.acquire() as conn:
            await processed.create_table(conn)
            await conn.execute("CREATE TABLE cleaned (user_id uuid NOT NULL)")

        async def cleanup(conn: Any, event: UserDeletedEvent) -> None:
            await conn.execute("INSERT INTO cleaned VALUES ($1)", event.user_id)

        handle = deduplicated(pool, cleanup, processed)
        event = make_event()
        # Two concurrent deliveries of one event, then a third one later.
        await asyncio.gather(handle(event), handle(event))
        await handle(event)

        async def failing(conn: Any, e: UserDeletedEvent) -> None:
            await conn.execute("INSERT INTO cleaned VALUES ($1)", e.user_id)
            raise RuntimeError("cleanup failed")

        other = make_event()
        with contextlib.suppress(RuntimeError):
            await deduplicated(pool, failing, processed)(other)
        # The failed attempt recorded nothing, so the retry does the cleanup.
        await handle(other)
        async with pool.acquire() as conn:
            cleaned = await conn.fetch("SELECT user_id FROM cleaned")
            ids = await conn.fetchval("SELECT count(*) FROM processed_events")
    finally:
        await pool.close()
    assert sorted(str(r["user_id"]) for r in cleaned) == sorted([event.user_id, other.user_id])
    assert ids == 2


async def _true(value: bool) -> bool:
    return value
