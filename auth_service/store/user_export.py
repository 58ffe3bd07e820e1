"""Every user's state at an event position: what ExportUserStates streams to a
follower of the user events (a client's local replica, auth_client.ReplicaConfig).

One read-only REPEATABLE READ transaction on the primary reads the last event
position (`outbox.current_position`) and then the users table in pages of ids in
ascending order, all in one snapshot. Positions follow commit order without holes
(store/outbox.py), so the export reflects exactly the events up to its position:
a follower applies every later one and misses nothing in between. The primary,
not a read replica: a replica's snapshot is consistent too, but an old one, and
the events between it and the stream's start may be gone from a follower's view.

The connection comes from the request pool and is held for the whole export, so
the server runs at most `MAX_CONCURRENT_EXPORTS` at once (the others wait, within
their deadline). Each page is one query, counted in the database status like any
other (the time between pages, while the caller reads, is not).
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from auth_client.contract import UserState
from auth_service import tracing
from auth_service.store.outbox import current_position
from auth_service.store.pool import Budget, translate_errors

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, Awaitable, Callable

    import asyncpg

    from auth_service.store.status import DatabaseStatus

MAX_CONCURRENT_EXPORTS = 2
T = TypeVar("T")

# One page of users in id order: the count, the ids (16 bytes each, big-endian, as
# uuid_send gives them; `uuid` compares as its bytes do) and one UserState number
# per id (the row -> state rule of store/users.py: no deleted_at ACTIVE, else
# DELETED; an export holds existing rows only). The first page has no lower bound.
_PAGE = rf"""
SELECT count(*)::int,
       coalesce(string_agg(uuid_send(id), ''::bytea ORDER BY id), ''::bytea),
       coalesce(string_agg(CASE WHEN deleted_at IS NULL THEN '\x{UserState.ACTIVE:02x}'::bytea
                                ELSE '\x{UserState.DELETED:02x}'::bytea END,
                           ''::bytea ORDER BY id), ''::bytea)
FROM (SELECT id, deleted_at FROM users {{where}} ORDER BY id LIMIT $1) AS page
"""  # noqa: S608 - constant text
_FIRST_PAGE = _PAGE.format(where="")
_NEXT_PAGE = _PAGE.format(where="WHERE id > $2")


@dataclass(frozen=True, slots=True)
class StatesPage:
    """Up to a page of users: `ids` 16 bytes each, ascending; `states` one UserState
    number per id; `position` the export's event position (the same in every page)."""

    position: int
    ids: bytes
    states: bytes


class UserExport:
    """Exports of one server: at most `concurrency` at once."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        status: DatabaseStatus,
        *,
        concurrency: int = MAX_CONCURRENT_EXPORTS,
    ) -> None:
        self._pool = pool
        self._status = status
        self._slots = asyncio.Semaphore(concurrency)

    async def pages(
        self, page_size: int, budget: Callable[[], Budget]
    ) -> AsyncGenerator[StatesPage, None]:
        """Every user's state, `page_size` users a page (at least one page, empty
        when there are no users). `budget()` is asked before each step: the caller's
        remaining deadline, capped by the statement timeout. Close the iterator
        (`contextlib.aclosing`) when not reading it to the end."""
        self._status.require()
        wait = budget()
        async with translate_errors(wait):
            await asyncio.wait_for(self._slots.acquire(), wait.seconds)
        try:
            async with (
                translate_errors(wait),
                self._pool.acquire(timeout=wait.seconds) as conn,
                conn.transaction(isolation="repeatable_read", readonly=True),
            ):
                position = await self._counted(budget(), current_position(conn))
                after: uuid.UUID | None = None
                while True:
                    step = budget()
                    if after is None:
                        query = conn.fetchrow(_FIRST_PAGE, page_size, timeout=step.seconds)
                    else:
                        query = conn.fetchrow(_NEXT_PAGE, page_size, after, timeout=step.seconds)
                    row = await self._counted(step, query)
                    assert row is not None  # an aggregate answers one row
                    count, ids, states = row
                    if count or after is None:
                        yield StatesPage(position, bytes(ids), bytes(states))
                    if count < page_size:
                        return
                    after = uuid.UUID(bytes=bytes(ids[-16:]))
        finally:
            self._slots.release()

    async def _counted(self, budget: Budget, query: Awaitable[T]) -> T:
        """One query of the export, counted in the database status (answered or left
        waiting), its errors translated."""
        status = self._status
        status.begin()
        answered = False
        try:
            async with translate_errors(budget):
                with tracing.query("SELECT", "users"):
                    result = await query
            answered = True
        finally:
            status.end(answered=answered)
        return result
