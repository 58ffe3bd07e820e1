"""Merging concurrent single-user lookups into one `= ANY($1)` query.

The request path, not PostgreSQL, limits this service: every query costs the Python
process a pool acquire, a round trip and a release. `StateLookup` keeps at most
`max_in_flight` state queries running; a lookup that arrives while they are all busy
waits for the next one, which carries every id queued meanwhile (up to `max_batch`).

Measured on grpc.aio, that alone rarely merges anything: the event loop takes in
one RPC per wake-up, so a query is usually back before the next lookup arrives, and
every lookup pays a database round trip and its loop wake-ups. Near saturation that
costs throughput (each query costs the process a pool acquire, a round trip and a
release), so there a lookup also waits a short collection window. The window is
only worth its latency when the process is queueing work anyway, so it is gated on
the calls in flight (`backlog()`, the API calls admitted and not yet answered):

- few calls in flight (at most 2 x `max_in_flight` x `target_batch`, 32 at the
  defaults): no wait, the lookup goes out at once (a moderately loaded server adds
  only the round trip);
- more calls in flight and lookups arriving fast: wait about `target_batch` average
  gaps (`DB_LOOKUP_TARGET_BATCH`), at most `max_window` (`DB_LOOKUP_WINDOW_MS`), so a
  saturated server answers many lookups with one query. `windows` counts the
  queries that waited.

Each caller has its own future: a caller that is cancelled (deadline, disconnect)
takes nothing down with it.

While tracing, each queued lookup carries its call's span context: the query's span is a child of the first call it answers and links every one; a call
answered by the state cache gets `auth.state_cache.hit` instead of a query span.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Self

from auth_client.contract import UserState
from auth_service import tracing
from auth_service.errors import DeadlineExceededError, ServiceError, UnavailableError
from auth_service.lifecycle import Lifecycle, LifecycleGuard
from auth_service.store.pool import Budget
from auth_service.store.state_cache import StateCache
from auth_service.store.users import BY_NUMBER, UserRepository

if TYPE_CHECKING:
    from opentelemetry.trace import SpanContext

log = logging.getLogger(__name__)

# (canonical id text, the caller's future, the caller's budget, the caller's span
# context while tracing)
_Waiter = tuple[str, "asyncio.Future[UserState]", Budget, "SpanContext | None"]


class StateLookup:
    """`UserState` lookups: from the server's state cache when it has the answer,
    else through the repository, concurrent single lookups merged into shared
    queries. Not thread-safe (one event loop). `max_in_flight=0`: one query per
    lookup. Closing fails the queued lookups and waits for the running queries; a
    closed one answers what memory has and refuses the rest (UNAVAILABLE)."""

    def __init__(
        self,
        users: UserRepository,
        *,
        cache: StateCache | None = None,
        max_in_flight: int = 2,
        max_batch: int = 1000,
        max_window: float = 0.002,
        target_batch: int = 8,
        backlog: Callable[[], int] | None = None,
    ) -> None:
        self._life = LifecycleGuard("the state lookups")
        self._users = users
        self.cache = cache if cache is not None else StateCache(max_size=0)
        self._merge = max_in_flight > 0
        self._max_in_flight = max(1, max_in_flight)
        self._max_batch = max_batch
        self._max_window = max_window
        self._target_batch = target_batch
        self._queue: list[_Waiter] = []
        self._in_flight = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._last_arrival = 0.0
        self._gap = 1.0  # moving average of the time between lookups, seconds
        # A window is worth waiting for only while more calls are in flight than the
        # queries running at once can take at the target batch size, twice over
        # (32 at the defaults: 2 queries x 8 lookups x 2); below that a query goes at once.
        self._busy_calls = 2 * self._max_in_flight * target_batch
        self._backlog = backlog if backlog is not None else (lambda: self._busy_calls + 1)
        self.hits = 0  # lookups answered from the state cache
        self.batches = 0  # queries sent
        self.lookups = 0  # lookups those queries answered
        self.windows = 0  # queries that waited for a collection window

    def cached(self, user_id: str) -> UserState | None:
        """The state of one canonical id if memory has it (state cache or index):
        no coroutine, no budget, for the calls that need neither. Never NOT_FOUND:
        memory may not have heard of a user another replica created a moment ago,
        so only a query on the primary says that (docs/architecture.md, "How fresh
        an answer is")."""
        cached = self.cache.get(user_id)
        if cached is None or cached is UserState.NOT_FOUND:
            return None
        self.hits += 1
        tracing.note("auth.state_cache.hit", value=True)
        return cached

    async def state(self, user_id: str, budget: Budget) -> UserState:
        """The state of one canonical (lower-case) id, sharing a query with others."""
        cached = self.cached(user_id)
        if cached is not None:
            return cached
        # Refused at once, not queued behind queries that wait on the database.
        self._users.status.require()
        if self._life.state is Lifecycle.CLOSED:
            raise UnavailableError("the server is shutting down")
        if not self._merge:
            return await self._users.state(user_id, budget)
        loop = asyncio.get_running_loop()
        now = loop.time()
        self._gap += (min(now - self._last_arrival, 1.0) - self._gap) * 0.1
        self._last_arrival = now
        fut: asyncio.Future[UserState] = loop.create_future()
        queue = self._queue
        queue.append((user_id, fut, budget, tracing.current_span_context()))
        if self._in_flight < self._max_in_flight and self._timer is None:
            if (
                len(queue) >= self._max_batch
                or 2 * self._gap >= self._max_window
                or self._backlog() <= self._busy_calls
            ):
                self._dispatch()
            else:
                self.windows += 1
                wait = min(self._max_window, self._gap * self._target_batch)
                self._timer = loop.call_later(wait, self._window_closed)
        return await fut

    def _window_closed(self) -> None:
        self._timer = None
        if self._queue and self._in_flight < self._max_in_flight:
            self._dispatch()

    def _dispatch(self) -> None:
        batch = self._queue[: self._max_batch]
        del self._queue[: self._max_batch]
        self._in_flight += 1
        task = asyncio.get_running_loop().create_task(self._run(batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, batch: list[_Waiter]) -> None:
        try:
            await self._query(batch)
        finally:
            self._in_flight -= 1
            # Lookups queued while every query was busy have waited long enough.
            if self._queue and self._in_flight < self._max_in_flight and self._timer is None:
                self._dispatch()

    async def _query(self, batch: list[_Waiter]) -> None:
        live = [w for w in batch if not w[1].done()]
        if not live:
            return
        # The query may run as long as the most patient caller in the batch waits;
        # callers with shorter deadlines are cancelled by gRPC on their own.
        budget = max((w[2] for w in live), key=lambda b: b.seconds)
        self.batches += 1
        self.lookups += len(live)
        keys = [w[0] for w in live]
        since = self.cache.generation()
        try:
            found = await self._users.states(",".join(keys), budget, [w[3] for w in live])
        except ServiceError as exc:
            _fail(live, exc)
            return
        except Exception as exc:  # a bug: answer INTERNAL, do not hang callers
            log.exception("batched lookup failed")
            _fail(live, exc)
            return
        answers = dict(zip(keys, map(BY_NUMBER.__getitem__, found), strict=True))
        self.cache.store(answers, since)
        for user_id, fut, _, _ in live:
            if not fut.done():
                fut.set_result(answers[user_id])

    async def states(self, keys: Sequence[str], budget: Budget) -> list[int]:
        """The UserState number of each canonical id, in order (BatchUserExists):
        cached answers, and one query for the rest."""
        cache = self.cache
        if not cache.enabled:
            self.batches += 1
            self.lookups += len(keys)
            return await self._users.states(",".join(keys), budget)
        get = cache.get
        # NOT_FOUND from memory is only a hint: it is asked again (see `cached`).
        out: list[int] = [_TRUSTED.get(get(key), 0) for key in keys]
        missing = [key for key, state in zip(keys, out, strict=True) if not state]
        self.hits += len(keys) - len(missing)
        tracing.note("auth.state_cache.hits", value=len(keys) - len(missing))
        if missing:
            self.batches += 1
            self.lookups += len(missing)
            since = cache.generation()
            found = await self._users.states(",".join(missing), budget)
            answers = dict(zip(missing, map(BY_NUMBER.__getitem__, found), strict=True))
            cache.store(answers, since)
            out = [state or answers[key] for key, state in zip(keys, out, strict=True)]
        return out

    async def start(self) -> None:
        self._life.start()

    async def aclose(self) -> None:
        await self._life.close(self._close)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _close(self) -> None:
        """Fail queued lookups and wait for running queries to finish."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        queued, self._queue = self._queue, []
        _fail(queued, UnavailableError("the server is shutting down"))
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


# The answers memory may give without a query: a state's number, else 0 (ask).
_TRUSTED: dict[UserState | None, int] = {
    UserState.ACTIVE: int(UserState.ACTIVE),
    UserState.DELETED: int(UserState.DELETED),
}


def _fail(waiters: Sequence[_Waiter], exc: BaseException) -> None:
    for _, fut, budget, _ in waiters:
        if fut.done():
            continue
        # The query ran on the most patient caller's budget: whether its timing out
        # is this caller's deadline or our own bound depends on this caller's budget.
        fut.set_exception(budget.timed_out() if isinstance(exc, DeadlineExceededError) else exc)
