"""Every user's state in 17 bytes a user: the storage of a local replica.

The idea of auth-service's own index of every user (auth_service/store/user_index.py):
a user's state changes at most twice (created, deleted) and ids are never reused, so
a snapshot of every id can answer any id, kept exact by hearing of each change. Two
sorted `array('Q')`s hold the ids' upper and lower 64 bits and a bytearray one
"deleted" flag per user: 17 bytes a user (a million users: 17 MB; a dict of a
million `uuid.UUID`s would take well over 100 MB). A lookup is a binary search on
`key.int`'s halves, a few microseconds.

Changes after the snapshot: a deletion of a known id flips its flag in place; a new
id goes into a small dict (`_added`, int id -> deleted?) that is merged into the
arrays once it holds `merge_at()` ids (one pass of slice copies: the arrays are
rebuilt, then swapped in as one tuple). States only move forward (NOT_FOUND ->
ACTIVE -> DELETED): an event applied twice, or late, changes nothing.

Readers in other threads (SyncAuthClient answers in its callers' threads) need no
lock: they read the arrays tuple once, item reads and the flag writes are atomic
under the GIL, and a merge swaps in complete new arrays before it empties the dict
(a reader that misses an id in between answers None, and the id is asked of
auth-service: never a wrong answer).
"""

from __future__ import annotations

import sys
from array import array
from bisect import bisect_left, bisect_right
from typing import TYPE_CHECKING

from auth_client.contract import UserState

if TYPE_CHECKING:
    import uuid

    _Arrays = tuple[array[int], array[int], bytearray]

_LOW = (1 << 64) - 1
_ACTIVE = UserState.ACTIVE
_DELETED = UserState.DELETED
# Merge the new ids into the arrays once there are this many, or 1/256 of the users.
MERGE_MIN = 1024


def _empty() -> _Arrays:
    return array("Q"), array("Q"), bytearray()


class ReplicaStates:
    """Every user's state: a snapshot (`extend`, in ascending id order) plus the
    events since (`created`, `deleted`). `get` answers ACTIVE, DELETED, or None for
    an id it does not know (which may have been created a moment ago)."""

    __slots__ = ("_added", "_arrays", "deleted_count", "merges")

    def __init__(self) -> None:
        self._arrays: _Arrays = _empty()
        self._added: dict[int, bool] = {}
        self.deleted_count = 0
        self.merges = 0

    def __len__(self) -> int:
        return len(self._arrays[0]) + len(self._added)

    def nbytes(self) -> int:
        """Bytes the arrays take (their allocation, not counting the dict of new ids)."""
        his, los, flags = self._arrays
        return sys.getsizeof(his) + sys.getsizeof(los) + sys.getsizeof(flags)

    # -- the snapshot ------------------------------------------------------

    def extend(self, ids: bytes, deleted: bytes) -> None:
        """Append a page of the export: 16-byte big-endian ids, ascending and above
        every id held; one flag per id (1 deleted, 0 active)."""
        if len(ids) != 16 * len(deleted):
            raise ValueError("one deleted flag per 16-byte id")
        if not deleted:
            return
        words = array("Q", ids)
        if sys.byteorder == "little":
            words.byteswap()
        his, los, flags = self._arrays
        first = (words[0], words[1])
        if his and first <= (his[-1], los[-1]):
            raise ValueError("export pages must come in ascending id order")
        his.extend(words[0::2])
        los.extend(words[1::2])
        flags += deleted
        self.deleted_count += len(deleted) - deleted.count(0)

    # -- lookups -----------------------------------------------------------

    def _find(self, arrays: _Arrays, value: int) -> int:
        """The index of id `value` in `arrays`, or -1."""
        his, los, _ = arrays
        high, low = value >> 64, value & _LOW
        i = bisect_left(his, high)
        if i == len(his) or his[i] != high:
            return -1
        if los[i] != low:  # rare: several ids share their upper half
            end = bisect_right(his, high, i)
            i = bisect_left(los, low, i, end)
            if i == end or los[i] != low:
                return -1
        return i

    def get(self, key: uuid.UUID) -> UserState | None:
        """ACTIVE or DELETED, or None when the id is not known here."""
        value = key.int
        arrays = self._arrays
        i = self._find(arrays, value)
        if i >= 0:
            return _DELETED if arrays[2][i] else _ACTIVE
        added = self._added.get(value)
        if added is None:
            return None
        return _DELETED if added else _ACTIVE

    # -- events ------------------------------------------------------------

    def created(self, key: uuid.UUID) -> None:
        """A user was created (a known id stays as it is)."""
        value = key.int
        if self._find(self._arrays, value) < 0 and value not in self._added:
            self._added[value] = False
            self._merge_if_due()

    def deleted(self, key: uuid.UUID) -> None:
        """A user was deleted (final)."""
        value = key.int
        arrays = self._arrays
        i = self._find(arrays, value)
        if i >= 0:
            if not arrays[2][i]:
                arrays[2][i] = 1
                self.deleted_count += 1
            return
        if not self._added.get(value, False):
            self._added[value] = True
            self.deleted_count += 1
            self._merge_if_due()

    def merge_at(self) -> int:
        return max(MERGE_MIN, len(self._arrays[0]) // 256)

    def _merge_if_due(self) -> None:
        if len(self._added) >= self.merge_at():
            self.merge()

    def merge(self) -> None:
        """Move the new ids into the arrays: one pass of slice copies, then the new
        arrays replace the old ones (readers see one or the other)."""
        if not self._added:
            return
        old_his, old_los, old_flags = self._arrays
        his, los, flags = _empty()
        done = 0
        for value in sorted(self._added):
            high, low = value >> 64, value & _LOW
            at = bisect_left(old_his, high, done)
            while at < len(old_his) and old_his[at] == high and old_los[at] < low:
                at += 1
            his.extend(old_his[done:at])
            los.extend(old_los[done:at])
            flags += old_flags[done:at]
            his.append(high)
            los.append(low)
            flags.append(1 if self._added[value] else 0)
            done = at
        his.extend(old_his[done:])
        los.extend(old_los[done:])
        flags += old_flags[done:]
        self._arrays = (his, los, flags)
        self._added = {}
        self.merges += 1


__all__ = ["MERGE_MIN", "ReplicaStates"]
