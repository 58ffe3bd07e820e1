"""A cache of user states in the server, exact up to the delivery of a notification.

The service owns the users table, so it can answer a hot id without a round trip.
A state changes only when a user is created (NOT_FOUND -> ACTIVE) or deleted
(ACTIVE -> DELETED; final, ids are never reused). Triggers on the table announce
every such change on `auth_users` at commit, whoever made it (migration
20261126000200), and `UserChangeFeed` drops the announced ids from the cache. So:

- the cache serves only while the feed's LISTEN is up; when it drops, the cache is
  emptied and bypassed until LISTEN is back (announcements may have been missed);
- an answer from a query is stored only if its id was not announced since the query
  started (`generation()` before, `store()` after): a query that read the old state
  just before a commit cannot put it back after the announcement;
- a replica's own CreateUser/DeleteUser also drops the id at once (read your writes
  on that replica without waiting for the notification);
- bounded: beyond `max_size` entries, the least recently stored are dropped.

Another replica's change is seen once its notification arrives (about a millisecond
after commit on one network), which is no later than an uncached read that started
at the same moment could have seen it.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping

from auth_service.store.listen import Listener
from auth_service.store.users import UserState

CHANNEL = "auth_users"
_FORGET_ALL = "*"


class StateCache:
    """id text -> UserState. One event loop; no locks."""

    __slots__ = ("_cleared_at", "_generation", "_invalidated", "_max_size", "_states", "enabled")

    def __init__(self, max_size: int = 200_000) -> None:
        self._states: OrderedDict[str, UserState] = OrderedDict()
        self._max_size = max_size
        self._generation = 0
        self._cleared_at = 0
        # id -> generation of its last announcement (bounded: cleared when large).
        self._invalidated: dict[str, int] = {}
        self.enabled = False  # set by the feed while its LISTEN is up

    def __len__(self) -> int:
        return len(self._states)

    def get(self, key: str) -> UserState | None:
        if not self.enabled:
            return None
        return self._states.get(key)

    def generation(self) -> int:
        """Take before a query whose answers will be `store`d."""
        return self._generation

    def store(self, answers: Mapping[str, UserState], since: int) -> None:
        """Keep the answers of a query that started at generation `since`, except
        those of ids announced (or everything cleared) since then."""
        if not self.enabled or since < self._cleared_at or self._max_size <= 0:
            return
        states, invalidated = self._states, self._invalidated
        for key, state in answers.items():
            if invalidated and invalidated.get(key, -1) > since:
                continue
            states[key] = state
        overflow = len(states) - self._max_size
        for _ in range(max(0, overflow)):
            states.popitem(last=False)

    def forget(self, keys: Iterable[str]) -> None:
        """These ids changed (or may have): drop them, and refuse answers about them
        from queries already running."""
        self._generation += 1
        generation = self._generation
        if len(self._invalidated) > 10_000:
            self.clear()
            return
        for key in keys:
            self._states.pop(key, None)
            self._invalidated[key] = generation

    def clear(self) -> None:
        """Forget everything, and every answer of a query already running."""
        self._generation += 1
        self._cleared_at = self._generation
        self._states.clear()
        self._invalidated.clear()

    def on_notify(self, payload: str) -> None:
        if payload == _FORGET_ALL:
            self.clear()
        else:
            self.forget(key.lower() for key in payload.split(",") if key)


class UserChangeFeed:
    """LISTEN `auth_users` for a StateCache: enable it while listening, empty it on
    every (re)connect and disconnect. An async context manager."""

    def __init__(
        self,
        database_url: str,
        cache: StateCache,
        *,
        connect_timeout_s: float = 5.0,
        max_backoff_s: float = 30.0,
    ) -> None:
        self.cache = cache
        self._listener = Listener(
            database_url,
            CHANNEL,
            cache.on_notify,
            application_name="auth-service-user-changes",
            on_up=self._up,
            on_down=self._down,
            # The health monitor says the database is unreachable; nothing to add.
            on_failure=lambda _exc: None,
            connect_timeout_s=connect_timeout_s,
            max_backoff_s=max_backoff_s,
        )

    @property
    def listening(self) -> bool:
        return self._listener.listening

    def _up(self) -> None:
        self.cache.clear()
        self.cache.enabled = True

    def _down(self) -> None:
        self.cache.enabled = False
        self.cache.clear()

    async def start(self) -> None:
        await self._listener.start()

    async def aclose(self) -> None:
        await self._listener.aclose()
        self._down()
