"""UserDeletedConsumer's bounds, against the real broker (issue #25, defect 3): a
stuck handler delays a rebalance by `revoke_timeout_s` at most, a dead-letter topic
that cannot be written is given up after `dead_letter_timeout_s` (the message stays
uncommitted and is delivered again), and `aclose()` returns after `close_timeout_s`
even when the handler never does.

The members here use a short session timeout: the embedded broker answers JoinGroup
only after about half of it."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from auth_client.events import (
    RetryPolicy,
    UserDeletedConsumer,
    UserDeletedEvent,
    encode_user_deleted,
    user_deleted_headers,
)
from tests.conftest import eventually
from tests.events.support import Collector, create_topic, group

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

    from auth_service.local.broker import EmbeddedKafka

pytestmark = pytest.mark.slow

# Apache Kafka refuses less than its group.min.session.timeout.ms (6 s by default);
# the embedded broker answers JoinGroup after about half of it.
SESSION_MS = 6000
FAST_RETRY = RetryPolicy(max_attempts=2, initial_backoff_s=0.05, max_backoff_s=0.1)


def make_event() -> UserDeletedEvent:
    now = datetime.now(UTC)
    return UserDeletedEvent(
        event_id=str(uuid.uuid4()), user_id=str(uuid.uuid4()), deleted_at=now, occurred_at=now
    )


async def produce(bootstrap: str, topic: str, partition: int, *events: UserDeletedEvent) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for event in events:
            await producer.send_and_wait(
                topic,
                value=encode_user_deleted(event),
                key=event.user_id.encode(),
                headers=user_deleted_headers(event.event_id),
                partition=partition,
            )
    finally:
        await producer.stop()


async def committed(bootstrap: str, topic: str, group_id: str, partition: int = 0) -> int | None:
    """The group's committed offset of one partition (asked without joining)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=group_id, enable_auto_commit=False
    )
    await consumer.start()
    try:
        offset: int | None = await consumer.committed(TopicPartition(topic, partition))
        return offset
    finally:
        await consumer.stop()


def member(
    handler: Callable[[UserDeletedEvent], Awaitable[None]],
    bootstrap: str,
    topic: str,
    group_id: str,
    **kw: Any,
) -> UserDeletedConsumer:
    return UserDeletedConsumer(
        handler,
        bootstrap_servers=bootstrap,
        group_id=group_id,
        topic=topic,
        dlq_topic=f"{topic}.dlq",
        session_timeout_ms=SESSION_MS,
        heartbeat_interval_ms=500,
        **kw,
    )


@contextlib.asynccontextmanager
async def running(consumer: UserDeletedConsumer) -> AsyncIterator[asyncio.Task[None]]:
    """`consumer` started and running until the block ends; closed afterwards."""
    async with consumer:
        task = asyncio.create_task(consumer.run())
        try:
            yield task
        finally:
            await asyncio.wait_for(consumer.aclose(), 30)
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(task, 5)


def hangs_once(
    stuck: UserDeletedEvent, seen: list[str], started: asyncio.Event, cancelled: asyncio.Event
) -> Callable[[UserDeletedEvent], Awaitable[None]]:
    """A handler that hangs on the first delivery of `stuck` until it is cancelled,
    and records every other delivery (redeliveries of `stuck` too) in `seen`."""
    release = asyncio.Event()  # never set

    async def handle(event: UserDeletedEvent) -> None:
        if event.event_id == stuck.event_id and not started.is_set():
            started.set()
            try:
                await release.wait()
            except asyncio.CancelledError:
                cancelled.set()
                raise
        seen.append(event.event_id)

    return handle


async def test_a_stuck_handler_delays_a_rebalance_by_the_revoke_bound_only(
    kafka_bootstrap: str, topic_name: str
) -> None:
    await create_topic(kafka_bootstrap, topic_name, 2)
    g = group()
    stuck = make_event()
    started, cancelled = asyncio.Event(), asyncio.Event()
    seen_a: list[str] = []
    seen_b: list[str] = []

    async def record_b(event: UserDeletedEvent) -> None:
        seen_b.append(event.event_id)

    a = member(
        hangs_once(stuck, seen_a, started, cancelled),
        kafka_bootstrap,
        topic_name,
        g,
        revoke_timeout_s=1.0,
    )
    b = member(record_b, kafka_bootstrap, topic_name, g, revoke_timeout_s=1.0)
    await produce(kafka_bootstrap, topic_name, 0, stuck)
    async with running(a):
        await asyncio.wait_for(started.wait(), 60)  # A owns both partitions, and hangs
        loop = asyncio.get_running_loop()
        joined_at = loop.time()
        async with running(b):
            # The group rebalances: A must give its partitions up although its
            # handler never returns; then each member owns one partition.
            later = [make_event() for _ in range(6)]
            await produce(kafka_bootstrap, topic_name, 0, *later[:3])
            await produce(kafka_bootstrap, topic_name, 1, *later[3:])
            await eventually(lambda: _true(bool(seen_b)), timeout=30)
            took = loop.time() - joined_at
            # 1 s revoke bound + two JoinGroup rounds of ~1.5 s each on this broker
            # + fetch; without the bound A never rejoins and B waits for ever.
            assert took < 12, f"the second member got no partition for {took:.1f}s"
            assert cancelled.is_set(), "the stuck handler was not cancelled at the bound"
            everything = {stuck.event_id, *(e.event_id for e in later)}
            await eventually(lambda: _true({*seen_a, *seen_b} >= everything), timeout=60)
    # At least once: the message whose handler was cancelled was not committed, so
    # it was delivered again (to whichever member got partition 0).
    assert stuck.event_id in {*seen_a, *seen_b}
    assert a.stats.handlers_cancelled == 1
    assert a.stats.handled == len(seen_a)


async def test_a_dead_letter_topic_that_cannot_be_written_is_given_up_and_not_committed(
    kafka_bootstrap: str, topic_name: str, private_kafka: EmbeddedKafka
) -> None:
    """The dead-letter producer talks to a broker that goes down: each write fails
    after its 1 s request timeout; after `dead_letter_timeout_s` the message is left
    uncommitted, delivered again, and dead-lettered once the broker is back."""
    await create_topic(kafka_bootstrap, topic_name, 1)
    g = group()
    poison, after = make_event(), make_event()
    attempts: list[str] = []
    handled: list[str] = []

    async def handler(event: UserDeletedEvent) -> None:
        attempts.append(event.event_id)
        if event.event_id == poison.event_id:
            raise ValueError("cannot clean up this one")
        handled.append(event.event_id)

    consumer = member(
        handler,
        kafka_bootstrap,
        topic_name,
        g,
        retry=FAST_RETRY,
        dead_letter_timeout_s=2.0,
        producer_options={
            "bootstrap_servers": private_kafka.bootstrap_servers,
            "request_timeout_ms": 1000,
        },
    )
    async with running(consumer):
        private_kafka.stop()
        loop = asyncio.get_running_loop()
        sent_at = loop.time()
        await produce(kafka_bootstrap, topic_name, 0, poison, after)
        # Two handler attempts, then ~2 s of dead-letter attempts, then it is
        # delivered again: the handler sees it a third time.
        await eventually(lambda: _true(attempts.count(poison.event_id) >= 3), timeout=30)
        assert loop.time() - sent_at < 15
        assert consumer.stats.dead_letter_failures >= 1
        assert consumer.stats.dead_lettered == 0
        # Nothing past the poison message was committed, nor handled.
        assert await committed(kafka_bootstrap, topic_name, g) is None
        assert after.event_id not in handled

        # The dead-letter broker is back (empty: the topic is made again).
        private_kafka.start()
        await create_topic(private_kafka.bootstrap_servers, f"{topic_name}.dlq", 1)
        async with Collector(private_kafka.bootstrap_servers, f"{topic_name}.dlq") as dlq:
            await eventually(lambda: _true(handled == [after.event_id]), timeout=60)
            await eventually(lambda: _true(len(dlq.records) >= 1), timeout=30)
        assert dlq.records[0].value == encode_user_deleted(poison)
        assert consumer.stats.dead_lettered >= 1
    assert await committed(kafka_bootstrap, topic_name, g) == 2


async def test_aclose_with_a_stuck_handler_returns_within_the_close_bound(
    kafka_bootstrap: str, topic_name: str
) -> None:
    await create_topic(kafka_bootstrap, topic_name, 1)
    g = group()
    stuck = make_event()
    started, cancelled = asyncio.Event(), asyncio.Event()
    seen: list[str] = []
    consumer = member(
        hangs_once(stuck, seen, started, cancelled),
        kafka_bootstrap,
        topic_name,
        g,
        close_timeout_s=1.0,
    )
    await produce(kafka_bootstrap, topic_name, 0, stuck)
    await consumer.start()
    task = asyncio.create_task(consumer.run())
    await asyncio.wait_for(started.wait(), 60)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    await asyncio.wait_for(consumer.aclose(), 20)
    took = loop.time() - t0
    assert took < 6, f"aclose took {took:.1f}s with close_timeout_s=1"
    assert cancelled.is_set()
    await asyncio.wait_for(task, 5)  # run() returned (its handler was cancelled)
    assert consumer.stats.handled == 0
    assert consumer.stats.handlers_cancelled == 1
    # Idempotent, and a closed consumer cannot be started or run again.
    await asyncio.wait_for(consumer.aclose(), 1)
    with pytest.raises(RuntimeError, match="closed"):
        await consumer.start()
    with pytest.raises(RuntimeError, match="closed"):
        await consumer.run()
    # The cancelled message was not committed: the group gets it again.
    assert await committed(kafka_bootstrap, topic_name, g) is None


async def test_aclose_is_bounded_even_when_the_handler_ignores_cancellation(
    kafka_bootstrap: str, topic_name: str
) -> None:
    await create_topic(kafka_bootstrap, topic_name, 1)
    started, release = asyncio.Event(), asyncio.Event()

    async def stubborn(event: UserDeletedEvent) -> None:
        started.set()
        with contextlib.suppress(asyncio.CancelledError):
            await release.wait()  # swallows the cancellation...
        await release.wait()  # ...and keeps waiting

    consumer = member(stubborn, kafka_bootstrap, topic_name, group(), close_timeout_s=1.0)
    await produce(kafka_bootstrap, topic_name, 0, make_event())
    await consumer.start()
    task = asyncio.create_task(consumer.run())
    try:
        await asyncio.wait_for(started.wait(), 60)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        await asyncio.wait_for(consumer.aclose(), 20)
        took = loop.time() - t0
        assert took < 8, f"aclose took {took:.1f}s with close_timeout_s=1"
        assert task.done()  # the run task was cancelled
        assert task.cancelled()
    finally:
        release.set()
        await asyncio.sleep(0.05)  # let the handler's task end
        if not task.done():
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert consumer.stats.handled == 0


async def test_stop_with_a_stuck_handler_ends_run_within_the_close_bound(
    kafka_bootstrap: str, topic_name: str
) -> None:
    """`stop()` (the SIGTERM hook) gives the handler in progress `close_timeout_s`."""
    await create_topic(kafka_bootstrap, topic_name, 1)
    stuck = make_event()
    started, cancelled = asyncio.Event(), asyncio.Event()
    seen: list[str] = []
    consumer = member(
        hangs_once(stuck, seen, started, cancelled),
        kafka_bootstrap,
        topic_name,
        group(),
        close_timeout_s=1.0,
    )
    await produce(kafka_bootstrap, topic_name, 0, stuck)
    async with consumer:
        task = asyncio.create_task(consumer.run())
        await asyncio.wait_for(started.wait(), 60)
        consumer.stop()
        await asyncio.wait_for(task, 6)
        assert cancelled.is_set()
    assert consumer.stats.handled == 0


async def _true(value: bool) -> bool:
    return value
