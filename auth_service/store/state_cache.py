"""A cache of user states in the server, exact up to the delivery of a notification.

The service owns the users table, so it can answer a hot id without a round trip.
A state changes only when a user is created (NOT_FOUND -> ACTIVE) or deleted
(ACTIVE -> DELETED; final, ids are never reused). Triggers on the table announce
every such change on `auth_users` at commit, whoever made it (migration
20261126000200), and the change feed (store/user_changes.py) drops the announced
ids from the cache. So:

- the cache serves only while the feed's LISTEN is up; when it drops, the cache is
  emptied and bypassed until LISTEN is back (announcements may have been missed);
- an answer from a query is stored only if its id was not announced since the query
  started (`generation()` before, `store()` after): a query that read the old state
  just before a commit cannot put it back after the announcement;
- a replica's own CreateUser/DeleteUser also drops the id at once (read your writes
  on that replica without waiting for the notification);
- an ACTIVE read from a read replica (DATABASE_READ_URL) may predate a deletion
  already announced (the replica has not replayed it yet), and no announcement
  would come again to drop it. So it is stored only if the replica was, before the
  query, known complete up to a moment after the id's last announcement and after
  the last time everything was forgotten (`fresh_as_of`, store/replicas.py).
  DELETED is final and stored as ever; NOT_FOUND never is;
- bounded: beyond `max_size` entries, the least recently stored are dropped.

Another replica's change is seen once its notification arrives (about a millisecond
after commit on one network), which is no later than an uncached read that started
at the same moment could have seen it.

Behind the cache, the feed can hold a `UserIndex` of every user (store/user_index.py,
up to `index_max_users`): loaded each time LISTEN comes up, it answers every id that
was not announced since its snapshot, existing or not. Announced ids are `stale` in
it and go the cache's way; a bulk change ('*') drops it, and it is loaded again
(also when a tenth of it has gone stale).
"""

from __future__ import annotations

import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping

from auth_client.contract import UserState
from auth_service.store.user_index import UserIndex

log = logging.getLogger(__name__)

_FORGET_ALL = "*"


class StateCache:
    """id text -> UserState. One event loop; no locks."""

    __slots__ = (
        "_announced",
        "_cleared_at",
        "_clock",
        "_everything_at",
        "_generation",
        "_invalidated",
        "_loading",
        "_max_changed",
        "_max_size",
        "_states",
        "enabled",
        "index",
        "index_loads",
    )

    def __init__(
        self, max_size: int = 200_000, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._states: OrderedDict[str, UserState] = OrderedDict()
        self._max_size = max_size
        # How many announced ids are tracked (against racing queries) before every
        # answer is dropped instead; an index is loaded again once this many of its
        # ids, or a tenth of it, have changed. A twentieth of the cache, at least
        # 1,000 (10,000 at the default size).
        self._max_changed = max(1_000, max_size // 20)
        self._generation = 0
        self._cleared_at = 0
        # id -> generation of its last announcement (bounded: cleared when large).
        self._invalidated: dict[str, int] = {}
        # For answers read from a replica: id -> when it was last announced (oldest
        # first; bounded: the oldest half folded into `_everything_at` when large),
        # and when everything was last forgotten (the feed came up: announcements
        # may have been missed; a bulk change). `clock` is the replica monitor's.
        self._clock = clock
        self._announced: dict[str, float] = {}
        self._everything_at = -math.inf
        self.enabled = False  # set by the feed while its LISTEN is up
        self.index: UserIndex | None = None  # every user, when the feed loaded one
        self._loading: set[str] | None = None  # ids announced since `begin_load`
        self.index_loads = 0  # indexes installed

    def __len__(self) -> int:
        return len(self._states)

    def get(self, key: str) -> UserState | None:
        if not self.enabled:
            return None
        state = self._states.get(key)
        if state is None and (index := self.index) is not None:
            return index.get(key)
        return state

    def answers_everything(self) -> bool:
        """Memory can answer every id (an index is loaded and the feed is up): a
        read that needs no query can be answered while the database cannot."""
        return self.enabled and self.index is not None

    def generation(self) -> int:
        """Take before a query whose answers will be `store`d."""
        return self._generation

    def store(
        self, answers: Mapping[str, UserState], since: int, *, fresh_as_of: float = math.inf
    ) -> None:
        """Keep the answers of a query that started at generation `since`, except
        those of ids announced (or everything cleared) since then. `fresh_as_of`:
        for a replica's answers, the moment up to which the replica was known
        complete before the query; its ACTIVE answers about ids announced at or
        after that moment are not kept (the replica may predate a deletion)."""
        if not self.enabled or since < self._cleared_at or self._max_size <= 0:
            return
        states, invalidated = self._states, self._invalidated
        announced = self._announced if fresh_as_of < math.inf else None
        replica_may_predate_everything = self._everything_at >= fresh_as_of
        for key, state in answers.items():
            if state is UserState.NOT_FOUND:
                continue  # never answered from memory (store/lookup.py)
            if invalidated and invalidated.get(key, -1) > since:
                continue
            if announced is not None and state is UserState.ACTIVE:
                if replica_may_predate_everything:
                    continue
                if announced and announced.get(key, -math.inf) >= fresh_as_of:
                    continue
            states[key] = state
        overflow = len(states) - self._max_size
        for _ in range(max(0, overflow)):
            states.popitem(last=False)

    def changed(self, key: str) -> None:
        """This replica just created or deleted `key` (committed): forget it at once."""
        self.forget((key,))

    def forget(self, keys: Iterable[str]) -> None:
        """These ids changed (or may have): drop them, and refuse answers about them
        from queries already running."""
        self._generation += 1
        generation = self._generation
        keys = list(keys)
        self._note_announced(keys)
        if self.index is not None:
            self.index.stale.update(keys)
        if self._loading is not None:
            self._loading.update(keys)
        if len(self._invalidated) > self._max_changed:
            self._drop_answers()  # the index stays: its stale ids are exact
            return
        for key in keys:
            self._states.pop(key, None)
            self._invalidated[key] = generation

    def _note_announced(self, keys: list[str]) -> None:
        now, announced = self._clock(), self._announced
        for key in keys:
            announced.pop(key, None)  # to the end: oldest first
            announced[key] = now
        if len(announced) > self._max_changed:
            oldest = list(announced)[: len(announced) // 2]
            self._everything_at = max(self._everything_at, announced[oldest[-1]])
            for key in oldest:
                del announced[key]

    def _drop_answers(self) -> None:
        self._generation += 1
        self._cleared_at = self._generation
        self._states.clear()
        self._invalidated.clear()

    def clear(self) -> None:
        """Forget everything (the index too), and every answer of a query or a load
        already running."""
        self._drop_answers()
        self.index = None
        self._loading = None
        self._announced.clear()
        self._everything_at = self._clock()

    def begin_load(self) -> None:
        """Take before an index load starts (its snapshot must come after this)."""
        self._loading = set()

    def install(self, index: UserIndex) -> bool:
        """Serve from `index`, loaded since the last `begin_load`, with the ids
        announced meanwhile stale; False (not installed) if everything was cleared
        since."""
        announced, self._loading = self._loading, None
        if announced is None or not self.enabled:
            return False
        index.stale = announced
        self.index = index
        self.index_loads += 1
        return True

    def abort_load(self) -> None:
        self._loading = None

    def index_outdated(self) -> bool:
        """No index, or so much of it changed that a fresh load is worth it."""
        index = self.index
        return index is None or len(index.stale) > max(self._max_changed, len(index) // 10)

    def on_notify(self, payload: str) -> None:
        if payload == _FORGET_ALL:
            self.clear()
        else:
            self.forget(key.lower() for key in payload.split(",") if key)
