"""UserDeletedConsumer: a consumer-group member that runs a handler for every
`user_deleted` event, at least once.

- The offset of a message is committed only after its handler returned (or after
  the message was written to the dead-letter topic), so a crash redelivers it.
- A failing handler is retried `RetryPolicy.max_attempts` times with capped
  exponential backoff, then the message goes to the dead-letter topic with the
  error in its headers and the partition moves on: one poison event never blocks
  the others.
- On a rebalance, no message of a revoked partition is started any more, the
  handler in progress gets `revoke_timeout_s` (then it is cancelled, its message
  not committed), and the offsets handled so far are committed before the
  partitions are given up: a stuck handler delays the group by that bound only.
- A dead-letter write that has not succeeded after `dead_letter_timeout_s` is given
  up: the message is not committed, the partition is rewound to it and it is
  delivered again (`stats.dead_letter_failures`).
- `stop()` lets the message in progress finish within `close_timeout_s` (then it is
  cancelled and not committed), commits, leaves the group; `aclose()` returns within
  about that bound, cancelling `run()` if it must. Lifecycle: new -> running ->
  closed; a closed consumer cannot be started again.
- While the application traces, each message is processed in a CONSUMER span that
  continues the trace of its `traceparent` header (the deletion's trace); every
  handler attempt is a child span, a retry an event, the dead-letter write a
  PRODUCER span whose `traceparent` the dead-lettered message carries.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
from typing import TYPE_CHECKING, Any, Self

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from auth_client import _tracing
from auth_client._dead_letter import DeadLetterWriter, RetryPolicy
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

    from opentelemetry.trace import Span

log = logging.getLogger("auth_client.events")

_CLOSE_GRACE_S = 1.0
"""How long aclose() waits for run() after cancelling the handler, then run()."""


class _State(enum.Enum):
    NEW = "new"
    RUNNING = "running"
    CLOSED = "closed"


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

    `metadata_max_age_ms` (5,000; aiokafka's default is 300,000) is how often it
    asks the brokers where partitions are led even when nothing failed. aiokafka
    0.14 resets a partition without a committed offset (a new group, after a
    rebalance) by asking the leader it last heard of, and when that broker is no
    longer the leader it retries it without asking again (consumer/fetcher.py,
    `_update_fetch_positions`): the partition stalls until this refresh. One small
    Metadata request per 5 s bounds that stall to about 5 s.

    Bounds (seconds; each must be > 0):

    - `revoke_timeout_s` (5): how long a rebalance waits for the handler in
      progress on a revoked partition before cancelling it. The whole group waits
      for this member meanwhile, so keep it short; the cancelled message is not
      committed and goes to the partition's next owner.
    - `dead_letter_timeout_s` (30): how long the dead-letter write of one message
      may keep retrying. Then the message is left uncommitted, its partition is
      rewound to it, and it is delivered again (handler retries included).
    - `close_timeout_s` (10): after `stop()` or `aclose()`, how long the handler in
      progress may still run before it is cancelled (not committed). `aclose()`
      then waits at most one more second for `run()` before cancelling it.

    `producer_options` go to the dead-letter producer and may override its
    `bootstrap_servers` (a dead-letter topic on another cluster).
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
        metadata_max_age_ms: int = 5_000,
        revoke_timeout_s: float = 5.0,
        dead_letter_timeout_s: float = 30.0,
        close_timeout_s: float = 10.0,
        enable_idempotence: bool = False,
        consumer_options: Mapping[str, Any] | None = None,
        producer_options: Mapping[str, Any] | None = None,
    ) -> None:
        bounds = {
            "revoke_timeout_s": revoke_timeout_s,
            "dead_letter_timeout_s": dead_letter_timeout_s,
            "close_timeout_s": close_timeout_s,
        }
        if bad := [name for name, value in bounds.items() if not value > 0]:
            raise ValueError(f"{', '.join(bad)} must be > 0")
        self._handler = handler
        self.dead_letter_timeout_s = dead_letter_timeout_s
        self.close_timeout_s = close_timeout_s
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
            **{
                "fetch_max_wait_ms": fetch_max_wait_ms,
                "metadata_max_age_ms": metadata_max_age_ms,
                **dict(consumer_options or {}),
            },
        )
        self._stopping = asyncio.Event()
        self._dead_letters = DeadLetterWriter(
            AIOKafkaProducer(
                client_id=f"{client_id}-dlq",
                acks="all",
                enable_idempotence=enable_idempotence,
                **{"bootstrap_servers": bootstrap_servers, **dict(producer_options or {})},
            ),
            topic=dlq_topic,
            group_id=group_id,
            retry=self.retry,
            stats=self.stats,
            timeout_s=dead_letter_timeout_s,
            sleep=self._sleep_unless_stopped,
        )
        self._offsets = Offsets(self._consumer, self.stats, revoke_timeout_s=revoke_timeout_s)
        self._stop_timer: asyncio.TimerHandle | None = None
        self._run_done = asyncio.Event()
        self._run_done.set()
        self._run_task: asyncio.Task[Any] | None = None
        self._closed = asyncio.Event()
        self._state = _State.NEW

    # -- lifecycle -----------------------------------------------------------------

    async def start(self) -> None:
        """Connect and join the group; called once (a second start, or a start after
        `aclose()`, raises RuntimeError)."""
        if self._state is not _State.NEW:
            raise RuntimeError(f"cannot start a consumer that is {self._state.value}")
        self._state = _State.RUNNING
        try:
            await self._dead_letters.producer.start()
            self._consumer.subscribe([self.topic], listener=self._offsets)
            await self._consumer.start()
        except BaseException:
            await self.aclose()
            raise

    def stop(self) -> None:
        """Ask `run()` to return once the message in progress is done; that message
        is cancelled (and not committed) if it takes `close_timeout_s` longer."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        with contextlib.suppress(RuntimeError):  # no running loop: nothing in progress
            self._stop_timer = asyncio.get_running_loop().call_later(
                self.close_timeout_s,
                self._offsets.cancel_in_flight,
                f"still running {self.close_timeout_s:g}s after stop",
            )

    async def aclose(self) -> None:
        """Stop (bounded by `close_timeout_s`), commit what was handled, leave the
        group. Idempotent; concurrent callers wait for the first to finish."""
        if self._state is _State.CLOSED:
            await self._closed.wait()
            return
        self._state = _State.CLOSED
        try:
            self.stop()
            await self._wait_for_run()
            await self._offsets.commit_all()
            for part in (self._consumer, self._dead_letters.producer):
                try:
                    await part.stop()
                except Exception as exc:
                    log.warning("error while stopping %s: %s", type(part).__name__, exc)
        finally:
            if self._stop_timer is not None:
                self._stop_timer.cancel()
            self._closed.set()

    async def _wait_for_run(self) -> None:
        """Wait for `run()` to return: its handler is cancelled `close_timeout_s`
        after stop(); a run() still going a second later is cancelled."""
        if await self._run_returned(self.close_timeout_s + _CLOSE_GRACE_S):
            return
        task = self._run_task
        if task is None or task is asyncio.current_task():
            return  # aclose() called from inside the handler: run() ends after it
        log.warning(
            "UserDeletedConsumer.run() did not return %.1fs after close; cancelling it",
            self.close_timeout_s + _CLOSE_GRACE_S,
        )
        task.cancel()
        await self._run_returned(_CLOSE_GRACE_S)

    async def _run_returned(self, timeout: float) -> bool:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._run_done.wait()
        return self._run_done.is_set()

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
        if self._state is _State.NEW:
            await self.start()
        if self._state is not _State.RUNNING:
            raise RuntimeError(f"cannot run a consumer that is {self._state.value}")
        if not self._run_done.is_set():
            raise RuntimeError("run() is already running")
        self._run_done.clear()
        self._run_task = asyncio.current_task()
        try:
            while not self._stopping.is_set():
                batch = await self._consumer.getmany(timeout_ms=500)
                # The assignment each partition's records were fetched under: a
                # rebalance while an earlier partition is handled makes them stale.
                epochs = {tp: self._offsets.epoch(tp) for tp in batch}
                for tp, records in batch.items():
                    await self._process_partition(tp, epochs[tp], records)
                    if self._stopping.is_set():
                        break
        finally:
            self._run_task = None
            self._run_done.set()

    async def _process_partition(
        self, tp: TopicPartition, epoch: int | None, records: list[Any]
    ) -> None:
        for record in records:
            if self._stopping.is_set():
                break  # not committed: the group starts from the committed offset
            if not self._offsets.may_start(tp, epoch) or not await self._offsets.handle(
                record, epoch, self._process(record)
            ):
                self._rewind(tp, record)
                break  # revoked, or not handled: not committed, delivered again
        await self._offsets.commit({tp})

    def _rewind(self, tp: TopicPartition, record: Any) -> None:
        """Fetch `record` again next (the rest of this batch is dropped): the
        position never moves past a message that was not handled. A partition no
        longer assigned restarts from its committed offset anyway."""
        if self._stopping.is_set() or tp not in self._consumer.assignment():
            return
        try:
            self._consumer.seek(tp, record.offset)
        except KafkaError as exc:
            log.warning("could not rewind %s to offset %d: %r", tp, record.offset, exc)

    async def _process(self, record: Any) -> bool:
        """Handle one message; True when it may be committed."""
        event_type = header(record.headers, HEADER_EVENT_TYPE)
        if event_type is not None and event_type != USER_DELETED_TYPE:
            self.stats.skipped += 1  # another event type on this topic: not ours
            return True
        with _tracing.kafka_span(
            "process",
            record.topic,
            parent=header(record.headers, HEADER_TRACEPARENT),
            partition=record.partition,
            offset=record.offset,
            group=self.group_id,
        ) as span:
            return await self._handle(record, span)

    async def _handle(self, record: Any, span: Span) -> bool:
        key = record.key.decode("utf-8", errors="replace") if record.key else None
        origin = Origin(record.topic, record.partition, record.offset, key)
        try:
            event = decode_user_deleted(record.value, origin)
        except EventDecodeError as exc:
            return await self._dead_letters.write(record, exc, attempts=0)
        span.set_attribute("messaging.message.id", event.event_id)
        attempt = 0
        while True:
            attempt += 1
            try:
                with _tracing.child_span(
                    span, "handle user_deleted", {"auth_client.attempt": attempt}
                ):
                    await self._handler(event)
            except Exception as exc:
                if attempt >= self.retry.max_attempts:
                    log.warning(
                        "user_deleted handler failed %d times for event %s; dead-lettering",
                        attempt,
                        event.event_id,
                    )
                    return await self._dead_letters.write(record, exc, attempts=attempt)
                self.stats.retries += 1
                log.info("user_deleted handler failed (attempt %d): %r", attempt, exc)
                delay = self.retry.delay(attempt)
                span.add_event(
                    "retry", {"auth_client.attempt": attempt, "auth_client.delay_s": delay}
                )
                if await self._sleep_unless_stopped(delay):
                    return False
            else:
                self.stats.handled += 1
                return True

    async def _sleep_unless_stopped(self, seconds: float) -> bool:
        """Sleep; True when stop() was requested (before or during the sleep)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._stopping.wait()
        return self._stopping.is_set()
