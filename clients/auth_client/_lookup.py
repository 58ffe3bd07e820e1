"""The miss path: rollout mode, breaker fast-fail, waiting on shared lookups with
the caller's deadline, and the fallback policy.

A caller waits on the batcher's futures with `asyncio.wait`, which never
cancels what it waits for: a caller that is cancelled or runs out of time
leaves the shared RPC, and every other caller of it, untouched.

Every lookup that reaches this module runs in an `auth_client.lookup` span
(`_tracing.span`: `_tracing.OFF`, which records nothing, while the application does
not trace), and `on_tracing` tells the client when the process starts or stops
tracing, so that its cache hits come here too while it does (its fast path records
no span). Cache expiry is read from the cache's own clock (`ExistsCache.clock`);
deadlines and the breaker use `time.monotonic()`.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from auth_client import _tracing
from auth_client._config import FallbackPolicy, RolloutMode
from auth_client._errors import CircuitOpenError, DeadlineExceededError, ServiceUnavailableError
from auth_client._models import ACTIVE, UserState
from auth_client._rollout import Shadow, report_unverified
from auth_client.contract import MAX_BATCH_IDS

if TYPE_CHECKING:
    import uuid
    from collections.abc import Callable

    from opentelemetry.trace import Span

    from auth_client._batcher import Batcher
    from auth_client._breaker import Breaker
    from auth_client._cache import ExistsCache
    from auth_client._metrics import Counters
    from auth_client._models import User
    from auth_client._replica import Replica

# A caller waits this long past its deadline, so that when its RPC shares the
# deadline, the RPC's own DEADLINE_EXCEEDED (counted by the breaker, chained to
# the gRPC error) is what it sees; the local timer is only a backstop.
GRACE = 0.02


class Lookup:
    def __init__(
        self,
        *,
        name: str,
        cache: ExistsCache,
        breaker: Breaker,
        counters: Counters,
        timeout: float,
        fallback: FallbackPolicy,
        rollout: RolloutMode,
        on_unverified: Callable[[tuple[uuid.UUID, ...]], object] | None,
        on_tracing: Callable[[bool], None] = lambda _on: None,
        replica: Replica | None = None,
    ) -> None:
        self._name = name
        self._replica = replica
        self._on_tracing = on_tracing
        self._traced = False
        self._cache = cache
        self._breaker = breaker
        self._counters = counters
        self._timeout = timeout
        self._fallback = fallback
        self._rollout = rollout
        self._on_unverified = on_unverified
        self._shadow = Shadow(name, counters)

    def _budget(self, timeout: float | None) -> float:
        wait = self._timeout if timeout is None else timeout
        if not wait > 0:
            raise ValueError("timeout must be positive")
        return wait

    def _circuit_open(self) -> CircuitOpenError:
        return CircuitOpenError(f"circuit breaker {self._name!r} is open: not calling auth-service")

    def _follow_tracing(self, span: Span) -> None:
        """Tell the client when the process starts or stops tracing: its cache-hit
        fast path records no span, so while tracing, hits come here too."""
        traced = _tracing.is_live(span)
        if traced is not self._traced:
            self._traced = traced
            self._on_tracing(traced)

    async def exist(
        self,
        batcher: Batcher,
        keys: list[uuid.UUID],
        timeout: float | None,
        fallback: FallbackPolicy | None,
    ) -> dict[uuid.UUID, bool]:
        """Answers for distinct `keys`, under the rollout mode and fallback policy."""
        with _tracing.span("auth_client.lookup") as span:
            self._follow_tracing(span)
            span.set_attribute("auth_client.client", self._name)
            span.set_attribute("auth_client.ids", len(keys))
            if self._rollout is RolloutMode.OFF:
                self._counters.unchecked += len(keys)
                span.set_attribute("auth_client.rollout", "off")
                return dict.fromkeys(keys, True)
            wait = self._budget(timeout)
            now = time.monotonic()
            answers, missing = self._cached(keys)
            span.set_attribute("auth_client.cache.hit", not missing)
            span.set_attribute("auth_client.cache.misses", len(missing))
            span.set_attribute("auth_client.breaker.state", self._breaker.state)
            if self._rollout is RolloutMode.SHADOW:
                span.set_attribute("auth_client.rollout", "shadow")
                self._shadow.check(batcher, self._breaker, answers, missing, now + wait)
                return dict.fromkeys(keys, True)
            if not missing:
                return answers
            if self._breaker.rejects(now):
                error = self._circuit_open()
                return await self._fall_back(keys, answers, missing, error, fallback, span=span)
            failed, failure = await self._ask(
                batcher, missing, answers, now + wait, wait, span=span
            )
            if failure is None:
                return answers
            return await self._fall_back(keys, answers, failed, failure, fallback, span=span)

    def _cached(self, keys: list[uuid.UUID]) -> tuple[dict[uuid.UUID, bool], list[uuid.UUID]]:
        """The answers memory has among `keys` (the local replica's, then fresh cache
        entries), and the keys without one."""
        cache = self._cache
        now = cache.clock()
        answers: dict[uuid.UUID, bool] = {}
        missing: list[uuid.UUID] = []
        replica = self._replica
        replicated = 0
        for key in keys:
            if replica is not None:
                known = replica.exists(key)
                if known is not None:
                    answers[key] = known
                    replicated += 1
                    continue
            cached = cache.fresh(key, now)
            if cached is None:
                missing.append(key)
            else:
                answers[key] = cached
        self._counters.replica_hits += replicated
        self._counters.cache_hits += len(answers) - replicated
        self._counters.cache_misses += len(missing)
        return answers, missing

    async def _ask(
        self,
        batcher: Batcher,
        missing: list[uuid.UUID],
        answers: dict[uuid.UUID, bool],
        deadline: float,
        wait: float,
        *,
        span: Span,
    ) -> tuple[list[uuid.UUID], ServiceUnavailableError | None]:
        """Wait up to `wait` for the shared lookups of `missing`, putting their
        answers in `answers`; the ids left unanswered, and why."""
        counters = self._counters
        joined = counters.coalesced
        futures = [batcher.future(key, deadline, span) for key in missing]
        span.set_attribute("auth_client.coalesced", counters.coalesced - joined)
        await asyncio.wait(futures, timeout=wait + GRACE)
        failed: list[uuid.UUID] = []
        failure: ServiceUnavailableError | None = None
        for key, future in zip(missing, futures, strict=True):
            if not future.done():
                failed.append(key)
                failure = failure or DeadlineExceededError(
                    f"no answer from auth-service within {wait}s"
                )
                continue
            error = future.exception()
            if error is None:
                answers[key] = future.result() == ACTIVE
            elif isinstance(error, ServiceUnavailableError):
                failed.append(key)
                failure = failure or error
            else:
                raise error
        return failed, failure

    async def _fall_back(
        self,
        keys: list[uuid.UUID],
        answers: dict[uuid.UUID, bool],
        failed: list[uuid.UUID],
        error: ServiceUnavailableError,
        fallback: FallbackPolicy | None,
        *,
        span: Span,
    ) -> dict[uuid.UUID, bool]:
        policy = self._fallback if fallback is None else fallback
        counters = self._counters
        # What the caller gets instead of an answer; raised errors end the span.
        span.set_attribute("auth_client.unanswered", len(failed))
        span.set_attribute("auth_client.unanswered.reason", type(error).__name__)
        if policy is not FallbackPolicy.FAIL_CLOSED:
            span.set_attribute("auth_client.fallback", policy.value)
        if policy is FallbackPolicy.SERVE_STALE:
            now = self._cache.clock()
            stale: dict[uuid.UUID, bool] = {}
            for key in failed:
                value = self._cache.stale(key, now)
                if value is None:
                    break
                stale[key] = value
            else:
                counters.fallback_stale += len(stale)
                answers.update(stale)
                return {key: answers[key] for key in keys}
        elif policy is FallbackPolicy.FAIL_OPEN:
            counters.fallback_open += len(failed)
            await report_unverified(self._on_unverified, failed, self._name)
            answers.update(dict.fromkeys(failed, True))
            return {key: answers[key] for key in keys}
        counters.unavailable += 1
        raise error

    async def user(
        self,
        batcher: Batcher,
        key: uuid.UUID,
        timeout: float | None,
    ) -> User | None:
        """GetUser, coalesced per id; no fallback (a profile cannot be made up)."""
        with _tracing.span("auth_client.get_user") as span:
            span.set_attribute("auth_client.client", self._name)
            span.set_attribute("auth_client.breaker.state", self._breaker.state)
            wait = self._budget(timeout)
            if self._breaker.rejects(time.monotonic()):
                self._counters.unavailable += 1
                raise self._circuit_open()
            future = batcher.user(key, wait, span)
            done, _ = await asyncio.wait((future,), timeout=wait + GRACE)
            try:
                if not done:
                    raise DeadlineExceededError(f"no answer from auth-service within {wait}s")
                return future.result()
            except ServiceUnavailableError:
                self._counters.unavailable += 1
                raise

    async def states(
        self, batcher: Batcher, keys: list[uuid.UUID], timeout: float | None
    ) -> dict[uuid.UUID, UserState]:
        """Each id's state as auth-service answers it now (`AuthClient.user_states`):
        no cache, no coalescing, no rollout mode, no fallback; RPCs of at most
        MAX_BATCH_IDS ids through the breaker. A local replica answers ACTIVE and
        DELETED (never NOT_FOUND) first."""
        budget = self._budget(timeout)
        with _tracing.span("auth_client.user_states") as span:
            span.set_attribute("auth_client.client", self._name)
            span.set_attribute("auth_client.ids", len(keys))
            out: dict[uuid.UUID, UserState] = {}
            ask = keys
            replica = self._replica
            if replica is not None:
                ask = []
                for key in keys:
                    known = replica.state_of(key)
                    if known is None:
                        ask.append(key)
                    else:
                        out[key] = known
                self._counters.replica_hits += len(out)
            for start in range(0, len(ask), MAX_BATCH_IDS):
                chunk = ask[start : start + MAX_BATCH_IDS]
                states = await batcher.states_uncached(chunk, budget, span)
                out.update(zip(chunk, map(UserState, states), strict=True))
            return {key: out[key] for key in keys}
