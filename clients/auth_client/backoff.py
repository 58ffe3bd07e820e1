"""Capped exponential backoff with jitter, the one formula every retry loop of the
project uses (the `user_deleted` consumer's handler retries, auth-service's outbox
relay while Kafka or PostgreSQL is down, the toolkit's calls to auth-service).

Attempt n (0-based) waits a random time between d/2 and d, where
d = min(maximum, initial * 2**n): spread out (no thundering herd after an outage),
yet never less than half the nominal delay.
"""

from __future__ import annotations

import random

__all__ = ["Backoff", "backoff_delay"]


def backoff_delay(attempt: int, initial: float, maximum: float) -> float:
    """The delay before retry `attempt` (0 = the first retry), in seconds."""
    ceiling = min(max(initial, maximum), initial * 2.0 ** min(max(attempt, 0), 30))
    jitter: float = random.uniform(0, ceiling / 2)  # noqa: S311 - jitter, not crypto
    return ceiling / 2 + jitter


class Backoff:
    """The delays of one retry loop: `next()` grows them, `reset()` after a success."""

    def __init__(self, initial: float, maximum: float) -> None:
        self.initial = initial
        self.maximum = max(initial, maximum)
        self._attempt = 0

    def next(self) -> float:
        delay = backoff_delay(self._attempt, self.initial, self.maximum)
        self._attempt += 1
        return delay

    def reset(self) -> None:
        self._attempt = 0
