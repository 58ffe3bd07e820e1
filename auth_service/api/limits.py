"""Admission limits checked before every API call: concurrency and rate.

- a bound on calls in flight in this process (MAX_CONCURRENT_RPCS) and, within
  it, per caller (MAX_CONCURRENT_RPCS_PER_CALLER), so one noisy caller cannot take
  every slot;
- a token bucket per caller (RATE_LIMIT_RPS refilled per second, RATE_LIMIT_BURST
  deep).

Each answers RESOURCE_EXHAUSTED at once: nothing queues. The checks are a few
dictionary look-ups and additions on the event loop thread (no locks needed:
only the loop calls them). Health and reflection calls do not pass through here.

Why not grpcio's own `maximum_concurrent_rpcs`: on grpcio 1.85 it does reject at
once, but it counts every RPC, health `Watch` streams and reflection included, so
a few open health watches lock out the API and health checks alike.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from auth_service.errors import RateLimitedError, ResourceExhaustedError

if TYPE_CHECKING:
    from collections.abc import Callable


class _Bucket:
    __slots__ = ("level", "stamp")

    def __init__(self, level: float, stamp: float) -> None:
        self.level = level
        self.stamp = stamp


class Limits:
    """Concurrency bound (global and per caller) and per-caller token buckets.

    A limit of 0 means "no limit". `admit(name)` raises ResourceExhaustedError or
    counts the call in; every admitted call must be matched by `release(name)`.
    `clock` is a switch for tests (seconds, monotonic).
    """

    __slots__ = (
        "_buckets",
        "_burst",
        "_clock",
        "_in_flight",
        "_max",
        "_max_per_caller",
        "_per_caller",
        "_rate",
    )

    def __init__(
        self,
        *,
        max_in_flight: int = 0,
        max_in_flight_per_caller: int = 0,
        rate_per_s: float = 0.0,
        burst: int = 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if min(max_in_flight, max_in_flight_per_caller, burst) < 0 or rate_per_s < 0:
            raise ValueError("limits must not be negative")
        self._max = max_in_flight
        self._max_per_caller = max_in_flight_per_caller
        self._rate = rate_per_s
        self._burst = float(burst or max(1, round(rate_per_s)))
        self._clock = clock
        self._in_flight = 0
        self._per_caller: dict[str, int] = {}
        self._buckets: dict[str, _Bucket] = {}

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def in_flight_of(self, name: str) -> int:
        return self._per_caller.get(name, 0)

    def admit(self, name: str) -> None:
        if self._max and self._in_flight >= self._max:
            raise ResourceExhaustedError(
                f"server busy: {self._max} calls in flight; retry with backoff"
            )
        mine = self._per_caller.get(name, 0)
        if self._max_per_caller and mine >= self._max_per_caller:
            raise ResourceExhaustedError(
                f"caller {name} has {self._max_per_caller} calls in flight; retry with backoff"
            )
        if self._rate:
            self._take(name)
        self._in_flight += 1
        self._per_caller[name] = mine + 1

    def release(self, name: str) -> None:
        self._in_flight -= 1
        self._per_caller[name] -= 1

    def _take(self, name: str) -> None:
        now = self._clock()
        bucket = self._buckets.get(name)
        if bucket is None:
            bucket = self._buckets[name] = _Bucket(self._burst, now)
        else:
            level = bucket.level + (now - bucket.stamp) * self._rate
            bucket.level = min(level, self._burst)
            bucket.stamp = now
        if bucket.level < 1.0:
            raise RateLimitedError(
                f"caller {name} exceeded its rate limit of {self._rate:g} calls/s"
            )
        bucket.level -= 1.0
