"""A bounded LRU cache of existence answers with per-state TTLs.

Entries are `(exists, expires_at)` tuples keyed by `uuid.UUID`, in an
`OrderedDict` whose order is recency. `AuthClient.user_exists` reads `entries`
directly on its hot path; everything else goes through the methods here.
Expired entries stay until evicted: SERVE_STALE may still use them.

`expires_at` is a reading of `clock` (by default `time.monotonic`), the one clock
every TTL and `max_stale` is measured on: a test replaces it with a clock it
advances itself (`client._cache.clock = clock`) instead of sleeping past a TTL.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING

from auth_client._models import ACTIVE, DELETED, NOT_FOUND, parse_user_id

if TYPE_CHECKING:
    import uuid

    from auth_client._config import CacheConfig

Entry = tuple[bool, float]


class ExistsCache:
    __slots__ = ("_max_size", "_ttl", "clock", "entries", "max_stale")

    def __init__(self, config: CacheConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.entries: OrderedDict[uuid.UUID, Entry] = OrderedDict()
        self.clock = clock
        """Seconds on a monotonic scale: what `expires_at` and `now` are read from."""
        self._max_size = config.max_size
        self.max_stale = config.max_stale
        # "deleted" is final (an id is never reused), so it is kept as long as
        # "exists"; "never existed" may change soon (the user is being created).
        self._ttl = {
            ACTIVE: config.positive_ttl,
            DELETED: config.positive_ttl,
            NOT_FOUND: config.negative_ttl,
        }

    def __len__(self) -> int:
        return len(self.entries)

    def fresh(self, key: uuid.UUID, now: float) -> bool | None:
        entry = self.entries.get(key)
        if entry is None or entry[1] <= now:
            return None
        self.entries.move_to_end(key)
        return entry[0]

    def stale(self, key: uuid.UUID, now: float) -> bool | None:
        """An answer no more than `max_stale` seconds past its expiry, if any."""
        entry = self.entries.get(key)
        if entry is None or now > entry[1] + self.max_stale:
            return None
        return entry[0]

    def put(self, key: uuid.UUID, state: int, now: float | None = None) -> None:
        ttl = self._ttl[state]
        if ttl <= 0 or self._max_size == 0:
            return
        expires = (self.clock() if now is None else now) + ttl
        entries = self.entries
        entries[key] = (state == ACTIVE, expires)
        entries.move_to_end(key)
        if len(entries) > self._max_size:
            entries.popitem(last=False)

    def discard(self, key: uuid.UUID) -> None:
        self.entries.pop(key, None)

    def clear(self) -> None:
        self.entries.clear()


class TextIds:
    """Memo of parsed text ids, so `user_exists("…")` on a cache hit does not pay
    for `uuid.UUID(text)` (over 1 µs) each time. Bounded: cleared when full."""

    __slots__ = ("_limit", "_parsed")

    def __init__(self, limit: int) -> None:
        self._parsed: dict[str, uuid.UUID] = {}
        self._limit = max(limit, 1024)

    def get(self, value: object) -> uuid.UUID:
        if value.__class__ is str:
            found = self._parsed.get(value)
            if found is not None:
                return found
            parsed = parse_user_id(value)
            if len(self._parsed) >= self._limit:
                self._parsed.clear()
            self._parsed[value] = parsed
            return parsed
        return parse_user_id(value)
