"""One lifecycle for every owner of a resource (relay, publisher, listener, ...):
new -> running -> closed. `start()` is called once (a second call, or a start after
`aclose()`, raises RuntimeError); `aclose()` is idempotent and may be called
concurrently (later callers wait until the first one has finished closing); a
closed owner cannot be reused: make a new one.

    class Owner:
        def __init__(self) -> None:
            self._life = LifecycleGuard("the owner")

        async def start(self) -> None:
            self._life.start()                # or: with self._life.starting(): ...
            ...

        async def aclose(self) -> None:
            await self._life.close(self._close)

`cancel(task)` stops a background task an owner started (pingers, watchers,
periodic jobs) for good, from its `aclose()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
from typing import TYPE_CHECKING, Any, Self

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterator


class Lifecycle(enum.Enum):
    NEW = "new"
    RUNNING = "running"
    CLOSED = "closed"


class LifecycleGuard:
    """The state of one owner; `owner` names it in the errors ("the outbox relay")."""

    def __init__(self, owner: str) -> None:
        self.owner = owner
        self._state = Lifecycle.NEW
        self._closed: asyncio.Event | None = None

    @property
    def state(self) -> Lifecycle:
        return self._state

    @property
    def running(self) -> bool:
        return self._state is Lifecycle.RUNNING

    def start(self) -> None:
        """NEW -> RUNNING; RuntimeError when started before or closed."""
        if self._state is Lifecycle.RUNNING:
            raise RuntimeError(f"{self.owner} is already running: start() is called once")
        if self._state is Lifecycle.CLOSED:
            raise RuntimeError(f"{self.owner} is closed and cannot be started again")
        self._state = Lifecycle.RUNNING

    @contextlib.contextmanager
    def starting(self) -> Iterator[None]:
        """`start()` for a start that may fail and be retried: when the body raises,
        the owner is NEW again (unless it was closed meanwhile)."""
        self.start()
        try:
            yield
        except BaseException:
            if self._state is Lifecycle.RUNNING:
                self._state = Lifecycle.NEW
            raise

    async def close(self, closer: Callable[[], Awaitable[None]]) -> None:
        """-> CLOSED. The first call awaits `closer()`; every later (or concurrent)
        call waits until that has finished, and never runs it again."""
        if self._closed is not None:
            await self._closed.wait()
            return
        self._state = Lifecycle.CLOSED
        self._closed = asyncio.Event()
        try:
            await closer()
        finally:
            self._closed.set()


class Owner:
    """Base of a resource owner with that lifecycle: `start()` once, `aclose()`
    idempotent, an async context manager. Subclasses write `_start()` and
    `_close()`; `_close()` runs once, also after a failed or missing start."""

    def __init__(self, name: str) -> None:
        self._life = LifecycleGuard(name)

    @property
    def state(self) -> Lifecycle:
        return self._life.state

    async def start(self) -> None:
        self._life.start()
        await self._start()

    async def aclose(self) -> None:
        await self._life.close(self._close)

    async def _start(self) -> None:
        """What starting does (after the state check)."""

    async def _close(self) -> None:
        """What closing does (once)."""

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


async def cancel(task: asyncio.Task[Any] | None) -> None:
    """Cancel `task` (None: nothing to stop) and wait until it has ended."""
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
