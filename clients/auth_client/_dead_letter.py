"""The dead-letter side of UserDeletedConsumer: how often a failing handler is
tried (`RetryPolicy`), the headers a dead-lettered message carries so that the
team owning the handler can see why it failed and where it came from, and the
write itself (`DeadLetterWriter`: the producer, retries bounded by
`dead_letter_timeout_s`, the PRODUCER span)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from aiokafka.errors import KafkaError

from auth_client import _tracing
from auth_client.backoff import backoff_delay

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from aiokafka import AIOKafkaProducer

    from auth_client._offsets import ConsumerStats

log = logging.getLogger("auth_client.events")


@dataclass(frozen=True)
class RetryPolicy:
    """How often a failing handler is tried before the event is dead-lettered."""

    max_attempts: int = 5
    initial_backoff_s: float = 0.2
    max_backoff_s: float = 5.0

    def delay(self, attempt: int) -> float:
        """Delay after failed attempt `attempt` (1-based): between d/2 and d, where
        d = min(max_backoff_s, initial_backoff_s * 2**(attempt-1))."""
        return backoff_delay(attempt - 1, self.initial_backoff_s, self.max_backoff_s)


def dead_letter_headers(
    record: Any, error: BaseException, attempts: int, group_id: str, original: Any
) -> list[tuple[str, bytes]]:
    """`original` headers (the event's own, trace context included) plus the failure:
    the error, attempts made, source topic/partition/offset, group and time."""
    return [
        *(original or ()),
        ("dlq-error", f"{type(error).__name__}: {error}"[:1000].encode()),
        ("dlq-error-type", type(error).__name__.encode()),
        ("dlq-attempts", str(attempts).encode()),
        ("dlq-source-topic", record.topic.encode()),
        ("dlq-source-partition", str(record.partition).encode()),
        ("dlq-source-offset", str(record.offset).encode()),
        ("dlq-consumer-group", group_id.encode()),
        ("dlq-failed-at", datetime.now(UTC).isoformat().encode()),
    ]


class DeadLetterWriter:
    """Writes a message that could not be handled to the dead-letter topic, retrying
    for `timeout_s`; owns the dead-letter producer (the consumer starts and stops
    it). `sleep(seconds)` sleeps and returns True when the consumer stops."""

    def __init__(
        self,
        producer: AIOKafkaProducer,
        *,
        topic: str,
        group_id: str,
        retry: RetryPolicy,
        stats: ConsumerStats,
        timeout_s: float,
        sleep: Callable[[float], Awaitable[bool]],
    ) -> None:
        self.producer = producer
        self.topic = topic
        self.group_id = group_id
        self.retry = retry
        self.timeout_s = timeout_s
        self._stats = stats
        self._sleep = sleep

    async def write(self, record: Any, error: BaseException, *, attempts: int) -> bool:
        """Write the message to the DLQ (retrying for `timeout_s`), in a PRODUCER
        span while the process traces."""
        with _tracing.kafka_span("send", self.topic) as span:
            span.set_attribute("auth_client.attempts", attempts)
            span.set_attribute("error.type", type(error).__name__)
            # The dead-lettered message continues the trace from this span.
            headers = _tracing.with_traceparent(record.headers, span)
            return await self._send(record, error, attempts, headers)

    async def _send(self, record: Any, error: BaseException, attempts: int, original: Any) -> bool:
        """Retry the write for `timeout_s`; False (do not commit) when it did not
        succeed by then or the consumer stops."""
        headers = dead_letter_headers(record, error, attempts, self.group_id, original)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout_s
        failures = 0
        while True:
            try:
                async with asyncio.timeout_at(deadline):
                    await self.producer.send_and_wait(
                        self.topic, value=record.value, key=record.key, headers=headers
                    )
            except (KafkaError, TimeoutError) as exc:
                failures += 1
                log.log(
                    logging.WARNING if failures == 1 else logging.DEBUG,
                    "could not write to dead-letter topic %s (attempt %d): %r",
                    self.topic,
                    failures,
                    exc,
                )
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return self._given_up(record, failures, exc)
                if await self._sleep(min(self.retry.delay(failures), remaining)):
                    return False
            else:
                self._stats.dead_lettered += 1
                return True

    def _given_up(self, record: Any, failures: int, exc: BaseException) -> bool:
        self._stats.dead_letter_failures += 1
        log.error(
            "gave up writing %s[%d]@%d to dead-letter topic %s after %gs (%d attempts, "
            "last error %r): the message is NOT committed and will be delivered again",
            record.topic,
            record.partition,
            record.offset,
            self.topic,
            self.timeout_s,
            failures,
            exc,
        )
        return False
