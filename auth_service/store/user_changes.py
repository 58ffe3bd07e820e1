"""The change feed of the users table: LISTEN `auth_users` for a `StateCache`, and
(with `index_max_users`) the loads of the index of every user it serves from.

The cache (store/state_cache.py) answers; this module decides when it may: it is
enabled while the LISTEN is up, emptied on every (re)connect and disconnect (an
announcement may have been missed), and each time the LISTEN comes up an index of
every user is read in one snapshot (store/user_index.py) and installed, with the ids
announced meanwhile stale. A failed load is retried with backoff; a table above the
bound is not loaded (said once per LISTEN session).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from auth_client.backoff import Backoff
from auth_service.lifecycle import Owner
from auth_service.notices import RepeatingNotice
from auth_service.store.connection import describe
from auth_service.store.listen import Listener
from auth_service.store.state_cache import StateCache
from auth_service.store.user_index import load_index

log = logging.getLogger(__name__)

CHANNEL = "auth_users"


class UserChangeFeed(Owner):
    """LISTEN `auth_users` for a StateCache: enable it while listening, empty it on
    every (re)connect and disconnect, and (with `index_max_users`) load it an index
    of every user each time LISTEN comes up. An async context manager."""

    def __init__(
        self,
        database_url: str,
        cache: StateCache,
        *,
        index_max_users: int = 0,
        connect_timeout_s: float = 5.0,
        max_backoff_s: float = 30.0,
        index_source: Callable[[], Awaitable[str]] | None = None,
    ) -> None:
        super().__init__("the user change feed")
        self.cache = cache
        self._url = database_url
        self._index_max_users = index_max_users
        # Where an index is read from, asked after each load began (a read replica
        # must have caught up with the primary by then); default: `database_url`.
        self._index_source = index_source
        self._connect_timeout_s = connect_timeout_s
        self._listener = Listener(
            database_url,
            CHANNEL,
            self._notified,
            application_name="auth-service-user-changes",
            on_up=self._up,
            on_down=self._down,
            # The health monitor says the database is unreachable; nothing to add.
            on_failure=lambda _exc: None,
            connect_timeout_s=connect_timeout_s,
            max_backoff_s=max_backoff_s,
        )
        self._loader: asyncio.Task[None] | None = None
        self._load_again = False
        self._too_big = False  # until the next LISTEN session
        self._closing = False
        self._backoff = Backoff(1.0, max_backoff_s)
        self._failing = RepeatingNotice(log)

    @property
    def listening(self) -> bool:
        return self._listener.listening

    def _notified(self, payload: str) -> None:
        self.cache.on_notify(payload)
        if self.cache.index_outdated():
            self._load_soon()

    def _up(self) -> None:
        self.cache.clear()
        self.cache.enabled = True
        self._too_big = False
        self._load_soon()

    def _down(self) -> None:
        self.cache.enabled = False
        self.cache.clear()

    def _load_soon(self) -> None:
        if self._index_max_users <= 0 or self._too_big or self._closing:
            return
        if self._loader is not None and not self._loader.done():
            self._load_again = True
            return
        self._load_again = True
        self._loader = asyncio.get_running_loop().create_task(self._load(), name="user-index")

    async def _load(self) -> None:
        while self._load_again and self.listening:
            self._load_again = False
            self.cache.begin_load()
            started = time.monotonic()
            url = self._url
            try:
                if self._index_source is not None:
                    url = await self._index_source()
                index = await load_index(
                    url,
                    max_users=self._index_max_users,
                    connect_timeout_s=self._connect_timeout_s,
                )
            except Exception as exc:
                self.cache.abort_load()
                self._failing.notice(
                    "user index: %s; ids are answered by the cache and queries meanwhile; retrying",
                    describe(url, exc),
                )
                self._load_again = True
                await asyncio.sleep(self._backoff.next())
                continue
            if index is None:
                self.cache.abort_load()
                self._too_big = True
                log.warning(
                    "user index: the users table holds more than STATE_INDEX_MAX_USERS=%d"
                    " users; not loaded (ids are answered by the cache and queries)",
                    self._index_max_users,
                )
                return
            if self.cache.install(index):  # else cleared meanwhile: `_load_again` says
                self._backoff.reset()
                self._failing.clear("user index: loaded again")
                log.info(
                    "user index: %d users (%d deleted) loaded in %.1f s",
                    len(index),
                    index.deleted,
                    time.monotonic() - started,
                )

    async def _start(self) -> None:
        await self._listener.start()

    async def _close(self) -> None:
        self._closing = True
        loader, self._loader = self._loader, None
        if loader is not None:
            loader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await loader
        await self._listener.aclose()
        self._down()
