"""The deletion's trace through the outbox, the relay and Kafka into
UserDeletedConsumer, in this process against the real broker: the relay's PRODUCER
span continues the stored trace and its traceparent travels as a Kafka header; the
consumer's CONSUMER span continues that, with a span per handler attempt, a retry
event, and the dead-letter hop as a PRODUCER span whose traceparent the dead
letter carries. While tracing is off, records carry no traceparent."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode

from auth_client.contract import admin_pb2, parse_traceparent
from auth_client.events import RetryPolicy, UserDeletedEvent
from auth_service.api.server import AuthServer
from tests.conftest import eventually
from tests.events.conftest import event_settings
from tests.events.support import admin_stub, consuming, create_topic
from tests.helpers import ADMIN_MD, create_user
from tests.tracing.conftest import Spans, new_traceparent


async def read_records(bootstrap: str, topic: str, count: int, timeout: float = 30) -> list[Any]:
    """The first `count` records of partition 0 of `topic` (no consumer group)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        consumer.assign([TopicPartition(topic, 0)])
        await consumer.seek_to_beginning()
        records: list[Any] = []
        async with asyncio.timeout(timeout):
            while len(records) < count:
                batch = await consumer.getmany(timeout_ms=200)
                for part in batch.values():
                    records.extend(part)
        return records
    finally:
        await consumer.stop()


def headers(record: Any) -> dict[str, str]:
    return {key: value.decode() for key, value in record.headers}


def ids(span: ReadableSpan) -> tuple[int, int]:
    return span.context.trace_id, span.context.span_id


async def _true(value: bool) -> bool:
    return value


async def test_a_deletion_is_one_trace_through_relay_kafka_and_the_consumer(
    app_spans: Spans, database_url: str, kafka_bootstrap: str, topic_name: str
) -> None:
    await create_topic(kafka_bootstrap, topic_name, 1)
    await create_topic(kafka_bootstrap, f"{topic_name}.dlq", 1)
    settings = event_settings(database_url, kafka_bootstrap, topic_name)
    attempts: Counter[str] = Counter()
    handled: list[str] = []
    async with AuthServer(settings) as server, admin_stub(server.address) as admin:
        flaky, poison = (await create_user(admin)).id, (await create_user(admin)).id
        parent, trace_id, _ = new_traceparent()
        md = (*ADMIN_MD, ("traceparent", parent))
        for user in (flaky, poison):
            await admin.DeleteUser(admin_pb2.DeleteUserRequest(user_id=user), metadata=md)
        records = await read_records(kafka_bootstrap, topic_name, 2)

    async def handler(event: UserDeletedEvent) -> None:
        attempts[event.user_id] += 1
        if event.user_id == poison or attempts[event.user_id] == 1:
            raise RuntimeError("the service database said no")
        handled.append(event.user_id)

    retry = RetryPolicy(max_attempts=2, initial_backoff_s=0.05, max_backoff_s=0.1)
    async with consuming(handler, kafka_bootstrap, topic_name, retry=retry) as consumer:
        await eventually(lambda: _true(consumer.stats.dead_lettered == 1), timeout=60)
    (dead,) = await read_records(kafka_bootstrap, f"{topic_name}.dlq", 1)
    assert handled == [flaky]

    # The relay: one PRODUCER span per event, child of the deletion's transaction,
    # and the record carries the relay span's traceparent.
    sends = app_spans.named(f"send {topic_name}")
    transactions = app_spans.named("UPDATE users")
    assert len(sends) == 2
    assert {s.kind for s in sends} == {SpanKind.PRODUCER}
    assert {s.parent.span_id for s in sends if s.parent} == {
        t.context.span_id for t in transactions
    }
    assert sorted(parse_traceparent(headers(r)["traceparent"])[:2] for r in records) == sorted(  # type: ignore[index]
        ids(s) for s in sends
    )
    # The consumer: a CONSUMER span per message, child of the relay's span.
    processes = app_spans.named(f"process {topic_name}")
    assert {s.kind for s in processes} == {SpanKind.CONSUMER}
    assert {(s.context.trace_id, s.parent.span_id) for s in processes if s.parent} == {
        ids(s) for s in sends
    }
    creates = {s.context.trace_id for s in app_spans.named("auth.v1.UserAdminService/CreateUser")}
    assert {s.context.trace_id for s in app_spans.all()} - creates == {trace_id}
    by_user = {dict(p.attributes or {})["messaging.message.id"]: p for p in processes}  # event ids
    assert len(by_user) == 2
    for process in processes:
        tries = [s for s in app_spans.named("handle user_deleted") if s.parent == process.context]
        assert [dict(s.attributes or {})["auth_client.attempt"] for s in tries] == [1, 2]
        assert tries[0].status.status_code is StatusCode.ERROR
        assert [e.name for e in process.events] == ["retry"]
    (dlq_send,) = app_spans.named(f"send {topic_name}.dlq")
    assert dlq_send.kind is SpanKind.PRODUCER
    assert dlq_send.parent in [p.context for p in processes]
    assert parse_traceparent(headers(dead)["traceparent"])[:2] == ids(dlq_send)  # type: ignore[index]


async def test_without_tracing_records_carry_no_traceparent(
    database_url: str, kafka_bootstrap: str, topic_name: str
) -> None:
    await create_topic(kafka_bootstrap, topic_name, 1)
    settings = event_settings(database_url, kafka_bootstrap, topic_name)
    async with AuthServer(settings) as server, admin_stub(server.address) as admin:
        user = (await create_user(admin)).id
        parent, _, _ = new_traceparent()
        md = (*ADMIN_MD, ("traceparent", parent))
        await admin.DeleteUser(admin_pb2.DeleteUserRequest(user_id=user), metadata=md)
        (record,) = await read_records(kafka_bootstrap, topic_name, 1)
    assert set(headers(record)) == {"event-id", "event-type", "content-type"}
