"""Coalescing and auto-batching of existence lookups (and coalescing of GetUser).

- Every id has at most one future: a lookup of an id that is already pending or
  in flight gets the same future (counted as `coalesced`).
- New ids collect in a pending batch. When no batch RPC is in flight the batch
  goes out on the next event-loop turn, so callers that arrive together share
  one RPC without waiting; while one is in flight, ids collect until it returns
  or for at most `BatchConfig.window`. A batch that reaches `max_ids` goes out at
  once, so a large request is split into RPCs of at most 1000 ids.
- The RPC runs in a task of its own, never in a caller's task: callers wait on
  the future without owning it (`asyncio.wait` does not cancel what it waits
  for), so a caller being cancelled or timing out never cancels the RPC or fails
  the other callers.
- An RPC's answer goes into the cache only if its id was not invalidated or
  marked deleted while the RPC was in flight.
- A batch remembers the spans of the lookups that put ids in it (`_tracing.OFF`
  while the application does not trace): its RPC's span is a child of the first
  and links every one, and each gets the batch size (`auth_client.batch.size`).
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

from auth_client import _tracing
from auth_client._errors import AuthClientError
from auth_client._models import ACTIVE, NOT_FOUND, User

A = TypeVar("A")
R = TypeVar("R")

if TYPE_CHECKING:
    import uuid

    from opentelemetry.trace import Span

    from auth_client._breaker import Breaker
    from auth_client._cache import ExistsCache
    from auth_client._config import BatchConfig
    from auth_client._metrics import Counters
    from auth_client._transport import Transport


class _Batch:
    __slots__ = ("deadline", "futures", "spans")

    def __init__(self) -> None:
        self.futures: dict[uuid.UUID, asyncio.Future[int]] = {}
        self.deadline = 0.0  # time.monotonic() by which the slowest member gives up
        self.spans: list[Span] = []  # the lookups it answers

    def join(self, deadline: float, span: Span) -> None:
        """A lookup waiting until `deadline`, in `span`, is answered by this batch."""
        self.deadline = max(self.deadline, deadline)
        spans = self.spans
        if not spans or spans[-1] is not span:
            spans.append(span)


def _fail(future: asyncio.Future[object], error: BaseException) -> None:
    if not future.done():
        future.set_exception(error)
        future.exception()  # retrieved: no "never retrieved" log if nobody waits


class Batcher:
    def __init__(
        self,
        transport: Transport,
        breaker: Breaker,
        cache: ExistsCache,
        counters: Counters,
        config: BatchConfig,
    ) -> None:
        self._transport = transport
        self._breaker = breaker
        self._cache = cache
        self._counters = counters
        self._window = config.window
        self._max_ids = config.max_ids
        self._pending = _Batch()
        self._inflight: dict[uuid.UUID, asyncio.Future[int]] = {}
        self._users: dict[uuid.UUID, asyncio.Future[User | None]] = {}
        self._timer: asyncio.Handle | None = None
        self._batches_in_flight = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False

    # -- existence ---------------------------------------------------------

    def future(
        self, key: uuid.UUID, deadline: float, span: Span = _tracing.OFF
    ) -> asyncio.Future[int]:
        """The future state (ACTIVE / DELETED / NOT_FOUND) of `key`, shared with
        every other concurrent lookup of it. `deadline` is a time.monotonic();
        `span` the lookup's span."""
        if self._closed:
            raise RuntimeError("AuthClient is closed")
        found = self._inflight.get(key)
        batch = self._pending
        if found is None:
            found = batch.futures.get(key)
            if found is not None:
                batch.join(deadline, span)
        if found is not None:
            self._counters.coalesced += 1
            return found
        loop = asyncio.get_running_loop()
        future: asyncio.Future[int] = loop.create_future()
        batch.futures[key] = future
        batch.join(deadline, span)
        if len(batch.futures) >= self._max_ids:
            self._flush()
        elif self._timer is None:
            if self._batches_in_flight == 0 or self._window == 0:
                self._timer = loop.call_soon(self._flush)
            else:
                self._timer = loop.call_later(self._window, self._flush)
        return future

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        batch = self._pending
        if not batch.futures:
            return
        self._pending = _Batch()
        self._inflight.update(batch.futures)
        self._batches_in_flight += 1
        self._spawn(self._send(batch))

    async def _send(self, batch: _Batch) -> None:
        ids = list(batch.futures)
        timeout = max(batch.deadline - time.monotonic(), 0.001)
        spans = batch.spans
        for span in spans:
            span.set_attribute("auth_client.batch.size", len(ids))
        # The first lookup is the parent; its outcome is recorded by its own span.
        rpc = functools.partial(self._transport.states, parent=spans[0], links=spans)
        try:
            states = await self._guarded(rpc, ids, timeout)
        except asyncio.CancelledError:
            self._settle_failed(batch, AuthClientError("AuthClient closed during the call"))
            raise
        except Exception as exc:
            self._settle_failed(batch, exc)
            self._next()
            return
        finally:
            self._batches_in_flight -= 1
        now = self._cache.clock()
        inflight = self._inflight
        for key, state in zip(ids, states, strict=True):
            future = batch.futures[key]
            if inflight.get(key) is future:
                del inflight[key]
                self._cache.put(key, state, now)
            if not future.done():
                future.set_result(state)
        self._next()

    def _next(self) -> None:
        """A batch came back: ids collected meanwhile go out now, not at the end of
        their window (the answer's round trip was the wait)."""
        if self._batches_in_flight == 0 and self._pending.futures and not self._closed:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = asyncio.get_running_loop().call_soon(self._flush)

    async def states_uncached(
        self, ids: list[uuid.UUID], timeout: float, span: Span = _tracing.OFF
    ) -> list[int]:
        """Ask auth-service directly (through the breaker), bypassing the cache and
        coalescing: for audits that must see the server's current answer. `span`:
        the span of the operation."""
        if self._closed:
            raise RuntimeError("AuthClient is closed")
        rpc = functools.partial(self._transport.states, parent=span)
        return await self._guarded(rpc, ids, timeout)

    def _settle_failed(self, batch: _Batch, error: BaseException) -> None:
        inflight = self._inflight
        for key, future in batch.futures.items():
            if inflight.get(key) is future:
                del inflight[key]
            _fail(future, error)  # type: ignore[arg-type]

    def forget(self, key: uuid.UUID) -> None:
        """Drop `key`'s in-flight lookups from coalescing and from the cache:
        their answers predate an invalidation or deletion."""
        self._inflight.pop(key, None)
        self._users.pop(key, None)

    # -- profiles ----------------------------------------------------------

    def user(
        self, key: uuid.UUID, timeout: float, span: Span = _tracing.OFF
    ) -> asyncio.Future[User | None]:
        """The future profile of `key` (one GetUser per id at a time); `span`: the
        span of the lookup that starts its RPC."""
        if self._closed:
            raise RuntimeError("AuthClient is closed")
        found = self._users.get(key)
        if found is not None:
            self._counters.coalesced += 1
            return found
        future: asyncio.Future[User | None] = asyncio.get_running_loop().create_future()
        self._users[key] = future
        self._spawn(self._fetch_user(key, future, timeout, span))
        return future

    async def _fetch_user(
        self, key: uuid.UUID, future: asyncio.Future[User | None], budget: float, span: Span
    ) -> None:
        current = True
        rpc = functools.partial(self._transport.get_user, parent=span)
        try:
            user = await self._guarded(rpc, key, budget)
        except asyncio.CancelledError:
            _fail(future, AuthClientError("AuthClient closed during the call"))  # type: ignore[arg-type]
            raise
        except Exception as exc:
            _fail(future, exc)  # type: ignore[arg-type]
            return
        finally:
            current = self._users.get(key) is future
            if current:
                del self._users[key]
        if current:
            self._cache.put(key, ACTIVE if user is not None else NOT_FOUND)
        if not future.done():
            future.set_result(user)

    async def _guarded(self, rpc: Callable[[A, float], Awaitable[R]], arg: A, timeout: float) -> R:
        """`rpc(arg, time left)` in one of the transport's slots, under the breaker."""
        async with self._transport.slot(timeout) as remaining:
            return await self._breaker.call(functools.partial(rpc, arg, remaining))

    # -- lifecycle ---------------------------------------------------------

    def _spawn(self, coro: object) -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        """Fail what has not been sent, cancel what is in flight. Idempotent."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        pending, self._pending = self._pending, _Batch()
        self._settle_failed(pending, AuthClientError("AuthClient closed before the call"))
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
