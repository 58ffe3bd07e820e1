"""Erasing deleted users' personal data (`users.ERASE`) when it is due.

By default DeleteUser erases in its own transaction. With a retention period
(`PII_RETENTION_S` > 0) the personal fields stay until it is over, and this job,
run by every `serve` process, erases what is due in small batches. Several
replicas run it at once safely: each batch claims its rows with
`FOR UPDATE SKIP LOCKED`, so no row is erased twice and none waits on another
replica. It also erases rows deleted before erasure existed, which
`auth-service erase-deleted` does on demand (`erase_due`, idempotent).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import asyncpg
from prometheus_client import Counter, Gauge

from auth_service import lifecycle
from auth_service.notices import RepeatingNotice
from auth_service.store.connection import reason
from auth_service.store.pool import Conn, execute_in_chunks
from auth_service.store.users import ERASE

log = logging.getLogger(__name__)

PENDING = Gauge(
    "users_erasure_pending_rows",
    "Deleted users whose personal data is not erased yet (within PII_RETENTION_S, or due)",
)
OLDEST_PENDING = Gauge(
    "users_erasure_oldest_pending_age_seconds",
    "Time since the deletion of the oldest deleted user whose personal data is not erased yet",
)
ERASED = Counter("users_erased", "Deleted users whose personal data was erased by the job")

_ERASE_DUE = f"""
UPDATE users SET {ERASE}
WHERE id IN (
    SELECT id FROM users
    WHERE deleted_at IS NOT NULL AND erased_at IS NULL
      AND deleted_at <= now() - make_interval(secs => $1)
    ORDER BY deleted_at
    LIMIT $2
    FOR UPDATE SKIP LOCKED
)
"""  # noqa: S608 - ERASE is a constant
_PENDING = """
SELECT count(*),
       coalesce(extract(epoch FROM now() - min(deleted_at)), 0)::float8,
       count(*) FILTER (WHERE deleted_at <= now() - make_interval(secs => $1))
FROM users WHERE deleted_at IS NOT NULL AND erased_at IS NULL
"""


@dataclass(frozen=True, slots=True)
class Pending:
    """Deleted users whose personal data is still there."""

    rows: int
    oldest_age_s: float
    due: int


async def pending(conn: Conn, retention_s: float) -> Pending:
    row = await conn.fetchrow(_PENDING, retention_s)
    assert row is not None
    return Pending(rows=int(row[0]), oldest_age_s=max(0.0, float(row[1])), due=int(row[2]))


async def erase_due(conn: Conn, retention_s: float, batch: int = 500) -> int:
    """Erase every deleted user whose retention period is over, `batch` rows per
    transaction (short row locks; rows another replica holds are left to it).
    Returns how many this call erased; 0 when there was nothing (left) to do."""
    return await execute_in_chunks(conn, _ERASE_DUE, retention_s, chunk=batch)


class ErasureJob(lifecycle.Owner):
    """Runs `erase_due` every `interval_s` on a pool and keeps the gauges current.
    An async context manager; `aclose()` is idempotent."""

    def __init__(self, pool: asyncpg.Pool, *, retention_s: float, interval_s: float) -> None:
        super().__init__("the erasure job")
        self._pool = pool
        self._retention_s = retention_s
        self._interval_s = interval_s
        self._task: asyncio.Task[None] | None = None
        self._failing = RepeatingNotice(log, interval=300.0)
        self.erased = 0

    async def _start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="pii-erasure")

    async def run_once(self, batch: int = 500) -> int:
        """Erase what is due now (in transactions of `batch` rows); update the gauges."""
        async with self._pool.acquire() as conn:
            erased = await erase_due(conn, self._retention_s, batch)
            left = await pending(conn, self._retention_s)
        PENDING.set(left.rows)
        OLDEST_PENDING.set(left.oldest_age_s)
        ERASED.inc(erased)
        self.erased += erased
        if erased:
            log.info("erased the personal data of %d deleted user(s)", erased)
        return erased

    async def _run(self) -> None:
        while True:
            try:
                await self.run_once()
            except Exception as exc:
                self._failing.notice("personal-data erasure did not run: %s", reason(exc))
            else:
                self._failing.clear()
            await asyncio.sleep(self._interval_s)

    async def _close(self) -> None:
        task, self._task = self._task, None
        await lifecycle.cancel(task)
