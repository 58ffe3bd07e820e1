"""Merging concurrent single-user lookups into shared `= ANY($1)` queries: the
machinery of store/lookup.py, one `QueryMerger` per kind of query it sends.

The request path, not PostgreSQL, limits this service: every query costs the Python
process a pool acquire, a round trip and a release. A merger keeps at most
`max_in_flight` queries running; a lookup that arrives while they are all busy waits
for the next one, which carries every lookup queued meanwhile (up to `max_batch`).

Measured on grpc.aio, that alone rarely merges anything: the event loop takes in
one RPC per wake-up, so a query is usually back before the next lookup arrives, and
every lookup pays a database round trip and its loop wake-ups. Near saturation that
costs throughput, so there a lookup also waits a short collection window. The
window is only worth its latency when the process is queueing work anyway, so it is
gated on the calls in flight (`backlog()`, the API calls admitted and not yet
answered):

- few calls in flight (at most 2 x `max_in_flight` x `target_batch`, 32 at the
  defaults): no wait, the lookup goes out at once (a moderately loaded server adds
  only the round trip);
- more calls in flight and lookups arriving fast: wait about `target_batch` average
  gaps (`DB_LOOKUP_TARGET_BATCH`), at most `max_window` (`DB_LOOKUP_WINDOW_MS`), so a
  saturated server answers many lookups with one query. `windows` counts the
  queries that waited.

Each caller has its own future: a caller that is cancelled (deadline, disconnect)
takes nothing down with it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING

from auth_service.errors import DeadlineExceededError

if TYPE_CHECKING:
    from opentelemetry.trace import SpanContext

    from auth_client.contract import UserState
    from auth_service.store.pool import Budget

# (canonical id text, the caller's future, the caller's budget, the caller's span
# context while tracing)
Waiter = tuple[str, "asyncio.Future[UserState]", "Budget", "SpanContext | None"]


class QueryMerger:
    """Queue lookups and hand them to `run(batch)` in shared batches. `run` must
    settle every future of its batch (or leave it to `fail`). One event loop."""

    def __init__(
        self,
        run: Callable[[list[Waiter]], Awaitable[None]],
        *,
        max_in_flight: int,
        max_batch: int,
        max_window: float,
        target_batch: int,
        backlog: Callable[[], int] | None,
    ) -> None:
        self._run_batch = run
        self._max_in_flight = max(1, max_in_flight)
        self._max_batch = max_batch
        self._max_window = max_window
        self._target_batch = target_batch
        self._queue: list[Waiter] = []
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
        self.windows = 0  # queries that waited for a collection window

    def idle(self) -> bool:
        """No lookup queued, in a query, or waiting for a collection window."""
        return self._in_flight == 0 and not self._queue and self._timer is None

    def submit(self, waiter: Waiter) -> None:
        """Queue `waiter`; its query goes now, or when a window closes or a running
        query returns."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        self._gap += (min(now - self._last_arrival, 1.0) - self._gap) * 0.1
        self._last_arrival = now
        queue = self._queue
        queue.append(waiter)
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

    async def _run(self, batch: list[Waiter]) -> None:
        try:
            await self._run_batch(batch)
        finally:
            self._in_flight -= 1
            # Lookups queued while every query was busy have waited long enough.
            if self._queue and self._in_flight < self._max_in_flight and self._timer is None:
                self._dispatch()

    async def close(self, exc: BaseException) -> None:
        """Fail the queued lookups with `exc` and wait for the running queries."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        queued, self._queue = self._queue, []
        fail(queued, exc)
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


def fail(waiters: Sequence[Waiter], exc: BaseException) -> None:
    for _, fut, budget, _ in waiters:
        if fut.done():
            continue
        # The query ran on the most patient caller's budget: whether its timing out
        # is this caller's deadline or our own bound depends on this caller's budget.
        fut.set_exception(budget.timed_out() if isinstance(exc, DeadlineExceededError) else exc)
