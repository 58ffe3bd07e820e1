"""UserDeletedConsumer: a consumer-group member that runs a handler for every
`user_deleted` event, at least once.

- The offset of a message is committed only after its handler returned (or after
  the message was written to the dead-letter topic), so a crash redelivers it.
- A failing handler is retried `RetryPolicy.max_attempts` times with capped
  exponential backoff, then the message goes to the dead-letter topic with the
  error in its headers and the partition moves on: one poison event never blocks
  the others.
- On a rebalance, the offsets handled so far are committed before the partitions
  are given up, and no message of a revoked partition is started afterwards.
- `stop()` lets the message in progress finish, commits, leaves the group.
- While the application traces, each message is processed in a CONSUMER span that
  continues the trace of its `traceparent` header (the deletion's trace); every
  handler attempt is a child span, a retry an event, the dead-letter write a
  PRODUCER span whose `traceparent` the dead-lettered message carries.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any, Self

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from auth_client import _tracing
from auth_client._dead_letter import RetryPolicy, dead_letter_headers
from auth_client._offsets import ConsumerStats, Offsets
from auth_client.contract import (
    DEFAULT_DLQ_TOPIC,
    DEFAULT_TOPIC,
    HEADER_EVENT_TYPE,
    HEADER_TRACEPARENT,
    USER_DELETED_TYPE,
    EventDecodeError,
    Origin,
    UserDeletedEvent,
    decode_user_deleted,
    header,
)

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping
    from types import TracebackType

    from opentelemetry.trace import Span, Tracer

log = logging.getLogger("auth_client.events")


class UserDeletedConsumer:
    """Consume `user_deleted` events with `handler(event)`.

        async with UserDeletedConsumer(handler, bootstrap_servers="kafka:9092",
                                       group_id="messaging-cleanup") as consumer:
            await consumer.run()          # until consumer.stop() or cancellation

    The handler must be idempotent, or use `auth_client.events.deduplicated`:
    delivery is at least once.

    `fetch_max_wait_ms` (25; aiokafka's default is 500) bounds how long a fetch
    waits on the broker. Kafka answers as soon as an event arrives, so there it
    only sets how often an idle consumer asks (40 times a second, one small request
    each); a broker that answers only when the wait expires (the embedded one) adds
    up to this much to every event's latency.
    """

    def __init__(
        self,
        handler: Callable[[UserDeletedEvent], Awaitable[None]],
        *,
        bootstrap_servers: str | list[str],
        group_id: str,
        topic: str = DEFAULT_TOPIC,
        dlq_topic: str = DEFAULT_DLQ_TOPIC,
        retry: RetryPolicy | None = None,
        client_id: str = "auth-client-events",
        auto_offset_reset: str = "earliest",
        session_timeout_ms: int = 10_000,
        heartbeat_interval_ms: int = 3_000,
        max_poll_records: int = 100,
        fetch_max_wait_ms: int = 25,
        enable_idempotence: bool = False,
        consumer_options: Mapping[str, Any] | None = None,
        producer_options: Mapping[str, Any] | None = None,
    ) -> None:
        self._handler = handler
        self.topic = topic
        self.dlq_topic = dlq_topic
        self.group_id = group_id
        self.retry = retry or RetryPolicy()
        self.stats = ConsumerStats()
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap_servers,
            group_id=group_id,
            client_id=client_id,
            enable_auto_commit=False,
            auto_offset_reset=auto_offset_reset,
            session_timeout_ms=session_timeout_ms,
            heartbeat_interval_ms=heartbeat_interval_ms,
            max_poll_records=max_poll_records,
            **{"fetch_max_wait_ms": fetch_max_wait_ms, **dict(consumer_options or {})},
        )
        self._producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap_servers,
            client_id=f"{client_id}-dlq",
            acks="all",
            enable_idempotence=enable_idempotence,
            **dict(producer_options or {}),
        )
        self._offsets = Offsets(self._consumer, self.stats)
        self._stopping = asyncio.Event()
        self._run_done = asyncio.Event()
        self._run_done.set()
        self._state = "new"

    # -- lifecycle -----------------------------------------------------------------

    async def start(self) -> None:
        if self._state != "new":
            raise RuntimeError(f"cannot start a consumer that is {self._state}")
        self._state = "starting"
        try:
            await self._producer.start()
            self._consumer.subscribe([self.topic], listener=self._offsets)
            await self._consumer.start()
        except BaseException:
            self._state = "running"
            await self.aclose()
            raise
        self._state = "running"

    def stop(self) -> None:
        """Ask `run()` to return once the message in progress is done."""
        self._stopping.set()

    async def aclose(self) -> None:
        """Stop, commit what was handled, leave the group. Idempotent."""
        if self._state in {"closing", "closed"}:
            await self._run_done.wait()
            return
        self._state = "closing"
        self._stopping.set()
        await self._run_done.wait()
        await self._offsets.commit_all()
        for part in (self._consumer, self._producer):
            try:
                await part.stop()
            except Exception as exc:
                log.warning("error while stopping %s: %s", type(part).__name__, exc)
        self._state = "closed"

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # -- the loop ------------------------------------------------------------------

    async def run(self) -> None:
        """Handle events until `stop()`; starts the consumer first if needed."""
        if self._state == "new":
            await self.start()
        if self._state != "running":
            raise RuntimeError(f"cannot run a consumer that is {self._state}")
        self._run_done.clear()
        try:
            while not self._stopping.is_set():
                batch = await self._consumer.getmany(timeout_ms=500)
                for tp, records in batch.items():
                    await self._process_partition(tp, records)
                    if self._stopping.is_set():
                        break
        finally:
            self._run_done.set()

    async def _process_partition(self, tp: TopicPartition, records: list[Any]) -> None:
        for record in records:
            if self._stopping.is_set():
                break
            async with self._offsets.lock:
                if tp not in self._offsets.owned:
                    break  # revoked: the new owner gets these from the committed offset
                if not await self._process(record):
                    break  # stopped: not committed, redelivered later
                self._offsets.handled(record)
        async with self._offsets.lock:
            await self._offsets.commit({tp})

    async def _process(self, record: Any) -> bool:
        """Handle one message; True when it may be committed."""
        event_type = header(record.headers, HEADER_EVENT_TYPE)
        if event_type is not None and event_type != USER_DELETED_TYPE:
            self.stats.skipped += 1  # another event type on this topic: not ours
            return True
        tracer = _tracing.tracer()
        if tracer is None:
            return await self._handle(record, None, None)
        with _tracing.kafka_span(
            tracer,
            "process",
            record.topic,
            parent=header(record.headers, HEADER_TRACEPARENT),
            partition=record.partition,
            offset=record.offset,
            group=self.group_id,
        ) as span:
            return await self._handle(record, tracer, span)

    async def _handle(self, record: Any, tracer: Tracer | None, span: Span | None) -> bool:
        key = record.key.decode("utf-8", errors="replace") if record.key else None
        origin = Origin(record.topic, record.partition, record.offset, key)
        try:
            event = decode_user_deleted(record.value, origin)
        except EventDecodeError as exc:
            return await self._dead_letter(record, exc, attempts=0, tracer=tracer)
        if span is not None:
            span.set_attribute("messaging.message.id", event.event_id)
        attempt = 0
        while True:
            attempt += 1
            try:
                if tracer is None:
                    await self._handler(event)
                else:
                    with tracer.start_as_current_span(
                        "handle user_deleted", attributes={"auth_client.attempt": attempt}
                    ):
                        await self._handler(event)
            except Exception as exc:
                if attempt >= self.retry.max_attempts:
                    log.warning(
                        "user_deleted handler failed %d times for event %s; dead-lettering",
                        attempt,
                        event.event_id,
                    )
                    return await self._dead_letter(record, exc, attempts=attempt, tracer=tracer)
                self.stats.retries += 1
                log.info("user_deleted handler failed (attempt %d): %r", attempt, exc)
                delay = self.retry.delay(attempt)
                if span is not None:
                    span.add_event(
                        "retry", {"auth_client.attempt": attempt, "auth_client.delay_s": delay}
                    )
                if await self._sleep_unless_stopped(delay):
                    return False
            else:
                self.stats.handled += 1
                return True

    async def _dead_letter(
        self, record: Any, error: BaseException, *, attempts: int, tracer: Tracer | None = None
    ) -> bool:
        """Write the message to the DLQ (retrying until it is acknowledged)."""
        if tracer is None:
            return await self._send_dead_letter(record, error, attempts, record.headers)
        with _tracing.kafka_span(tracer, "send", self.dlq_topic) as span:
            span.set_attribute("auth_client.attempts", attempts)
            span.set_attribute("error.type", type(error).__name__)
            # The dead-lettered message continues the trace from this span.
            headers = _tracing.with_traceparent(record.headers, span)
            return await self._send_dead_letter(record, error, attempts, headers)

    async def _send_dead_letter(
        self, record: Any, error: BaseException, attempts: int, original: Any
    ) -> bool:
        headers = dead_letter_headers(record, error, attempts, self.group_id, original)
        failures = 0
        while True:
            try:
                await self._producer.send_and_wait(
                    self.dlq_topic, value=record.value, key=record.key, headers=headers
                )
            except KafkaError as exc:
                failures += 1
                log.warning("could not write to dead-letter topic %s: %s", self.dlq_topic, exc)
                if await self._sleep_unless_stopped(self.retry.delay(failures)):
                    return False
            else:
                self.stats.dead_lettered += 1
                return True

    async def _sleep_unless_stopped(self, seconds: float) -> bool:
        """Sleep; True when stop() was requested (before or during the sleep)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._stopping.wait()
        return self._stopping.is_set()
