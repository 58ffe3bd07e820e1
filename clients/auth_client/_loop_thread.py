"""One daemon thread running an asyncio event loop, for `SyncAuthClient`.

- `submit(fn, ...)` from any thread runs the coroutine `fn(...)` in the loop, in a
  copy of the submitting thread's `contextvars` context (so an OpenTelemetry span
  current in the caller is the parent of the lookup's span), and returns a
  `concurrent.futures.Future`.
- `stop(final)` refuses new submissions, runs `final()` in the loop, waits for every
  task submitted before it (each settles: `final` closes what they wait on), stops
  the loop, shuts its default executor down (where FAIL_OPEN hooks run) and joins
  the thread. Every submitted future is settled by then: a submission either
  raises at once or is started before `final`.
- `abandon()` stops the loop without waiting (an unclosed client being collected).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import functools
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class LoopClosedError(RuntimeError):
    """The loop thread is stopping or stopped: nothing more runs there."""


def _copy_outcome(future: concurrent.futures.Future[Any], task: asyncio.Task[Any]) -> None:
    if task.cancelled():
        future.set_exception(LoopClosedError("cancelled: the client closed"))
        return
    error = task.exception()
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(task.result())


class LoopThread:
    def __init__(self, name: str) -> None:
        self._loop = asyncio.new_event_loop()
        self._lock = threading.Lock()
        self._accepting = True
        self._tasks: set[asyncio.Task[Any]] = set()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    @property
    def ident(self) -> int | None:
        return self._thread.ident

    def _run(self) -> None:
        loop = self._loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
        finally:
            try:
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.run_until_complete(loop.shutdown_default_executor())
            finally:
                loop.close()

    def submit(
        self, fn: Callable[..., Coroutine[Any, Any, T]], /, *args: Any, **kwargs: Any
    ) -> concurrent.futures.Future[T]:
        """Run `fn(*args, **kwargs)` in the loop; LoopClosedError once stopping."""
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        context = contextvars.copy_context()
        start = functools.partial(self._start, future, fn, args, kwargs, context)
        with self._lock:
            if not self._accepting:
                raise LoopClosedError("the client is closed")
            self._loop.call_soon_threadsafe(start)
        return future

    def _start(
        self,
        future: concurrent.futures.Future[Any],
        fn: Callable[..., Coroutine[Any, Any, Any]],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        context: contextvars.Context,
    ) -> None:
        task = self._loop.create_task(fn(*args, **kwargs), context=context)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(functools.partial(_copy_outcome, future))

    async def _final(self, final: Callable[[], Coroutine[Any, Any, None]]) -> None:
        try:
            await final()
            while self._tasks:
                await asyncio.gather(*self._tasks, return_exceptions=True)
        finally:
            self._loop.stop()

    def stop(self, final: Callable[[], Coroutine[Any, Any, None]], timeout: float = 30.0) -> None:
        """Refuse new work, run `final()`, finish the submitted tasks, stop and join.
        Idempotent. Not from the loop thread itself."""
        with self._lock:
            accepting, self._accepting = self._accepting, False
            if accepting:
                self._loop.call_soon_threadsafe(self._loop.create_task, self._final(final))
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise RuntimeError(f"the client's thread did not stop within {timeout}s")

    def abandon(self) -> None:
        """Stop the loop without waiting for anything (best effort)."""
        with self._lock:
            if not self._accepting:
                return
            self._accepting = False
            try:
                self._loop.call_soon_threadsafe(self._loop.stop)
            except RuntimeError:  # already closed
                return


__all__ = ["LoopClosedError", "LoopThread"]
