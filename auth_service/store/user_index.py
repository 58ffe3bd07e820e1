"""Every user's state in memory, so that no UserExists needs a query.

The service owns the users table, and a user's state changes at most twice (created,
deleted; ids are never reused). So a server can read every id once and answer any id
from memory, existing or not, as long as it hears of each change: the same
LISTEN/NOTIFY feed that keeps the state cache exact (store/state_cache.py) marks
every announced id `stale`, and a stale id is answered the usual way (cache, then a
query) until the next load.

Compact on purpose: a million users take 17 MB (two sorted arrays of the ids'
upper and lower 64 bits, and one byte per user for "deleted"); a dict of a million id
strings grew a process by 121 MiB here. A lookup is a binary search (2-4 µs in a
micro-benchmark).

`load_index` reads the table in chunks of `CHUNK` ids, in one read-only
REPEATABLE READ transaction (one snapshot), over its own connection. Every change
committed after that snapshot is announced after the load began, so an owner that
marks announced ids stale from before the load until it installs the index
(`StateCache.begin_load` / `install`) misses none.
"""

from __future__ import annotations

import contextlib
import sys
import uuid
from array import array
from bisect import bisect_left, bisect_right

import asyncpg

from auth_client.contract import UserState

CHUNK = 100_000  # a load holds one chunk beside the arrays: +19 MiB RSS for 1M users

# One chunk of ids after $1, in id order: the ids (16 bytes each, big-endian, as
# uuid_send gives them) and one byte per id, 1 if deleted. `uuid` compares as its
# 16 bytes do, so id order is the order of the arrays below.
_CHUNK = r"""
SELECT count(*)::int,
       coalesce(string_agg(uuid_send(id), ''::bytea ORDER BY id), ''::bytea),
       coalesce(string_agg(CASE WHEN deleted_at IS NULL THEN '\x00'::bytea
                                ELSE '\x01'::bytea END, ''::bytea ORDER BY id), ''::bytea)
FROM (SELECT id, deleted_at FROM users WHERE id > $1 ORDER BY id LIMIT $2) AS c
"""


class UserIndex:
    """A snapshot of every user's state, plus the ids changed since (`stale`)."""

    __slots__ = ("_deleted", "_hi", "_lo", "deleted", "stale")

    def __init__(self, ids: bytes = b"", deleted: bytes = b"") -> None:
        """`ids`: 16-byte big-endian ids in ascending order; `deleted`: one byte
        per id, nonzero if deleted. More can be appended in order (`extend`)."""
        self._hi = array("Q")
        self._lo = array("Q")
        self._deleted = bytearray()
        self.deleted = 0
        self.stale: set[str] = set()
        self.extend(ids, deleted)

    def extend(self, ids: bytes, deleted: bytes) -> None:
        """Append ids that sort after every id held (a load's next chunk)."""
        if len(ids) != 16 * len(deleted):
            raise ValueError("one deleted flag per 16-byte id")
        words = array("Q", ids)
        if sys.byteorder == "little":
            words.byteswap()
        self._hi.extend(words[0::2])
        self._lo.extend(words[1::2])
        self._deleted += deleted
        self.deleted += len(deleted) - deleted.count(0)

    def __len__(self) -> int:
        return len(self._hi)

    def get(self, key: str) -> UserState | None:
        """The state of a canonical (lower-case, hyphenated) id; None if it changed
        since the snapshot."""
        if key in self.stale:
            return None
        high = int(key[:8] + key[9:13] + key[14:18], 16)
        his = self._hi
        i = bisect_left(his, high)
        if i == len(his) or his[i] != high:
            return UserState.NOT_FOUND
        low = int(key[19:23] + key[24:], 16)
        los = self._lo
        if los[i] != low:  # rare: several ids share their upper half
            end = bisect_right(his, high, i)
            i = bisect_left(los, low, i, end)
            if i == end or los[i] != low:
                return UserState.NOT_FOUND
        return UserState.DELETED if self._deleted[i] else UserState.ACTIVE


async def load_index(
    database_url: str,
    *,
    max_users: int,
    connect_timeout_s: float = 5.0,
    chunk: int = CHUNK,
    application_name: str = "auth-service-user-index",
) -> UserIndex | None:
    """Read every user's state; None if the table holds more than `max_users`."""
    conn = await asyncpg.connect(
        database_url,
        timeout=connect_timeout_s,
        server_settings={"application_name": application_name},
    )
    try:
        # Chunk by chunk into the arrays: the load holds one chunk beside them.
        index = UserIndex()
        after = uuid.UUID(int=0)
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            # uuid 0 itself is an id nobody can have but a user could: read it apart.
            zero = await conn.fetchval(
                "SELECT deleted_at IS NOT NULL FROM users WHERE id = $1", after
            )
            if zero is not None:
                index.extend(after.bytes, b"\x01" if zero else b"\x00")
            while True:
                row = await conn.fetchrow(_CHUNK, after, chunk)
                assert row is not None  # an aggregate answers one row
                count, part, part_flags = row
                if not count:
                    break
                if len(index) + count > max_users:
                    return None
                index.extend(part, part_flags)
                after = uuid.UUID(bytes=bytes(part[-16:]))
                del part, part_flags, row
                if count < chunk:
                    break
        return index
    finally:
        with contextlib.suppress(Exception):
            await conn.close(timeout=2)
        conn.terminate()
