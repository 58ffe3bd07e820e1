"""The circuit breaker: pybreaker's state machine, driven from asyncio.

pybreaker has no asyncio support (its decorator on an `async def` only guards
the creation of the coroutine), so the guarded await runs inside
`with breaker.calling():`, which sees the awaited call's outcome.

Three things pybreaker does not do, done here:
- in half-open state only ONE probe call is admitted; every other call fails at
  once with `CircuitOpenError` until the probe has answered;
- a failure of a call that started before the breaker opened is not counted again:
  pybreaker judges each call by the state it started in, so when 100 calls are in
  flight as a server dies, each late failure would re-open the open breaker (log
  line, listener call, `opened` counter, and the probe pushed back every time);
- `rejects()` answers "would fail at once" without touching pybreaker, so the
  client can skip enqueueing work while the circuit is open.

What counts as a failure is `counts_against_breaker` (transport failures only).
Everything else — NOT_FOUND / INVALID_ARGUMENT / PERMISSION answers and
`CancelledError` — is excluded; pybreaker then treats the call as a success (the
server did answer). Callers being cancelled never reach a guarded call at all:
the RPC runs in its own task, shielded from them, and is cancelled only when
the client closes.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

import pybreaker

from auth_client._errors import CircuitOpenError, counts_against_breaker

if TYPE_CHECKING:
    from auth_client._config import BreakerConfig

log = logging.getLogger("auth_client.breaker")
T = TypeVar("T")

CLOSED = pybreaker.STATE_CLOSED
OPEN = pybreaker.STATE_OPEN
HALF_OPEN = pybreaker.STATE_HALF_OPEN

StateListener = Callable[[str, str], object]
"""Called with (old state, new state): "closed", "open" or "half-open"."""


class _StaleFailure(Exception):  # noqa: N818 - a marker, never seen outside this module
    """A transport failure of a call that started before the breaker opened."""


def _is_not_a_failure(error: BaseException) -> bool:
    return isinstance(error, _StaleFailure) or not counts_against_breaker(error)


class _Listener(pybreaker.CircuitBreakerListener):
    def __init__(self, owner: Breaker) -> None:
        self._owner = owner

    def state_change(
        self,
        _cb: pybreaker.CircuitBreaker,
        old_state: pybreaker.CircuitBreakerState | None,
        new_state: pybreaker.CircuitBreakerState,
    ) -> None:
        old = old_state.name if old_state is not None else CLOSED
        self._owner._changed(old, new_state.name)


class Breaker:
    """One client's breaker. Not thread-safe: use it from one event loop."""

    def __init__(
        self,
        config: BreakerConfig,
        *,
        name: str,
        listeners: tuple[StateListener, ...] = (),
    ) -> None:
        self.enabled = config.enabled
        self._name = name
        self._reset_timeout = config.reset_timeout
        self._opened_at = -math.inf
        self._probe_in_flight = False
        self._listeners = listeners
        self.opened_count = 0
        self._cb = pybreaker.CircuitBreaker(
            fail_max=config.fail_max,
            reset_timeout=config.reset_timeout,
            exclude=[_is_not_a_failure],
            listeners=[_Listener(self)],
            name=name,
            # The call that trips the breaker keeps its own error (e.g.
            # UNAVAILABLE); the calls after it get CircuitOpenError.
            throw_new_error_on_trip=False,
        )

    @property
    def state(self) -> str:
        return str(self._cb.current_state)

    @property
    def failures(self) -> int:
        """Consecutive transport failures counted so far (reset by any answer)."""
        return int(self._cb.fail_counter)

    def rejects(self, now: float) -> bool:
        """True when a call made now would fail at once: open and not yet due for
        a probe, or a probe is already in flight."""
        if not self.enabled or self._cb.current_state == CLOSED:
            return False
        if self._probe_in_flight:
            return True
        return self._cb.current_state == OPEN and now < self._opened_at + self._reset_timeout

    async def call(self, fn: Callable[[], Awaitable[T]]) -> T:
        """Await `fn()` under the breaker; `CircuitOpenError` without calling it
        when the circuit is open or another probe is in flight."""
        if not self.enabled:
            return await fn()
        probe = self._cb.current_state != CLOSED
        if probe:
            if self._probe_in_flight:
                raise CircuitOpenError(
                    f"circuit breaker {self._name!r} is half-open and its probe call is in flight"
                )
            self._probe_in_flight = True
        generation = self.opened_count
        late: Exception | None = None
        try:
            with self._cb.calling():
                try:
                    return await fn()
                except Exception as exc:
                    if self.opened_count != generation and counts_against_breaker(exc):
                        # Already counted by the opening: pybreaker sees a non-failure.
                        late = exc
                        raise _StaleFailure from None
                    raise
        except _StaleFailure:
            assert late is not None
            raise late from late.__cause__
        except pybreaker.CircuitBreakerError as exc:
            raise CircuitOpenError(
                f"circuit breaker {self._name!r} is open: auth-service failed "
                f"{self._cb.fail_max} times in a row; next probe after {self._reset_timeout}s"
            ) from exc
        finally:
            if probe:
                self._probe_in_flight = False

    def _changed(self, old: str, new: str) -> None:
        if new == OPEN:
            self._opened_at = time.monotonic()
            self.opened_count += 1
            log.warning(
                "auth_client %s: circuit breaker %s -> open (auth-service failing; "
                "calls fail fast for %.1fs)",
                self._name,
                old,
                self._reset_timeout,
            )
        elif new == CLOSED:
            log.info("auth_client %s: circuit breaker %s -> closed", self._name, old)
        else:
            log.info("auth_client %s: circuit breaker %s -> %s", self._name, old, new)
        for listener in self._listeners:
            try:
                listener(old, new)
            except Exception:
                log.exception("auth_client %s: breaker state listener failed", self._name)

    def __repr__(self) -> str:
        return f"Breaker(name={self._name!r}, state={self.state!r})"


__all__ = ["CLOSED", "HALF_OPEN", "OPEN", "Breaker", "StateListener"]
