"""One LISTEN connection kept alive: NOTIFY is how the outbox wakes its relay and how
a server learns that another replica changed a user.

asyncpg does not re-establish a LISTEN: a connection that drops (or dies silently,
without a FIN) just stops delivering. `Listener` watches it (termination callback,
and a `SELECT 1` every `check_interval_s`), reconnects with backoff, and tells its
owner when it is up (`on_up`: notifications sent before this moment were missed, so
anything that relies on them must be rebuilt) and down (`on_down`: stop relying on
notifications until the next `on_up`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Self

import asyncpg

from auth_client.backoff import Backoff
from auth_service.lifecycle import LifecycleGuard
from auth_service.notices import RepeatingNotice
from auth_service.store.connection import describe

log = logging.getLogger(__name__)


class Listener:
    """LISTEN on `channel`; `on_notify(payload)` for each notification. An async
    context manager: new -> running -> closed (`auth_service.lifecycle`); a second
    `start()` raises RuntimeError, `aclose()` is idempotent."""

    def __init__(
        self,
        database_url: str,
        channel: str,
        on_notify: Callable[[str], None],
        *,
        application_name: str,
        on_up: Callable[[], None] = lambda: None,
        on_down: Callable[[], None] = lambda: None,
        on_failure: Callable[[BaseException], None] | None = None,
        connect_timeout_s: float = 5.0,
        check_interval_s: float = 10.0,
        max_backoff_s: float = 30.0,
    ) -> None:
        self._url = database_url
        self._channel = channel
        self._on_notify = on_notify
        self._on_up = on_up
        self._on_down = on_down
        self._application_name = application_name
        self._connect_timeout_s = connect_timeout_s
        self._check_interval_s = check_interval_s
        self._backoff = Backoff(0.2, max_backoff_s)
        self._closing = asyncio.Event()
        self._lost: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._life = LifecycleGuard(f"LISTEN {channel}")
        self._down = RepeatingNotice(log)
        # Who says that the database cannot be reached (default: this listener, at
        # most once a minute); an owner that already reports it passes its own.
        self._on_failure = on_failure or self._notice
        self.listening = False
        self.sessions = 0  # how many times a LISTEN was established

    async def start(self) -> None:
        self._life.start()
        self._task = asyncio.create_task(self._run(), name=f"listen-{self._channel}")

    async def aclose(self) -> None:
        await self._life.close(self._close)

    async def _close(self) -> None:
        self._closing.set()
        if self._lost is not None:
            self._lost.set()
        task, self._task = self._task, None
        if task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _run(self) -> None:
        while not self._closing.is_set():
            try:
                await self._session()
            except Exception as exc:
                self._on_failure(exc)
            if not self._closing.is_set():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._backoff.next()):
                        await self._closing.wait()

    def _notice(self, exc: BaseException) -> None:
        self._down.notice("LISTEN %s: %s; retrying", self._channel, describe(self._url, exc))

    def _notified(self, _conn: object, _pid: int, _channel: str, payload: object) -> None:
        self._on_notify(str(payload))

    async def _session(self) -> None:
        lost = self._lost = asyncio.Event()
        conn = await asyncpg.connect(
            self._url,
            timeout=self._connect_timeout_s,
            server_settings={"application_name": self._application_name},
        )
        try:
            conn.add_termination_listener(lambda _conn: lost.set())
            await conn.add_listener(self._channel, self._notified)
            self.listening = True
            self.sessions += 1
            self._backoff.reset()
            self._down.clear(f"LISTEN {self._channel}: connected again")
            self._on_up()
            while not self._closing.is_set() and not lost.is_set():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._check_interval_s):
                        await lost.wait()
                if not lost.is_set() and not self._closing.is_set():
                    await conn.fetchval("SELECT 1", timeout=5)  # a silently dead connection
            if lost.is_set() and not self._closing.is_set():
                log.info("LISTEN %s: connection lost; reconnecting", self._channel)
        finally:
            if self.listening:
                self.listening = False
                self._on_down()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), timeout=2)
            conn.terminate()
