"""The dead-letter side of UserDeletedConsumer: how often a failing handler is
tried (`RetryPolicy`), and the headers a dead-lettered message carries so that the
team owning the handler can see why it failed and where it came from."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from auth_client.backoff import backoff_delay


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
