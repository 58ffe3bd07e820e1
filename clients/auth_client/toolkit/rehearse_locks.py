"""Lock waits on the copy while the playbook runs, sampled every 50 ms from
`pg_stat_activity` and `pg_locks` (the rehearsal cannot read the server's log, so
`log_lock_waits` is no source).

- The longest lock wait of the step: of any session on the copy (the migration
  tool's DDL waiting for the load's locks, and the load queued behind the DDL),
  and of the migration tool's sessions alone. From `pg_locks.waitstart`
  (PostgreSQL 14+; before, from when the waiting statement started): a wait is
  seen to within one interval, and one shorter than an interval may be missed.
- Retries after a lock timeout: the emitted migrations wait between attempts with
  `pg_sleep` (at least half a second), so each time a migration session is seen
  in `PgSleep` anew is one retry.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Self

import asyncpg

from auth_client.toolkit.rehearse_copy import APP, connect

if TYPE_CHECKING:
    from types import TracebackType

    from auth_client.toolkit.rehearse_report import StepResult

__all__ = ["LockMonitor"]

INTERVAL_S = 0.05

_SAMPLE = """
SELECT a.pid, a.application_name LIKE $1 AS ours, a.wait_event = 'PgSleep' AS sleeping,
       EXTRACT(epoch FROM pg_catalog.clock_timestamp() - {since}) * 1000 AS lock_ms
FROM pg_catalog.pg_stat_activity a
WHERE a.datname = pg_catalog.current_database() AND a.pid <> pg_catalog.pg_backend_pid()
"""
_SINCE_14 = (
    "(SELECT min(l.waitstart) FROM pg_catalog.pg_locks l WHERE l.pid = a.pid AND NOT l.granted)"
)
_SINCE_OLD = "CASE WHEN a.wait_event_type = 'Lock' THEN a.query_start END"


class LockMonitor:
    """`async with LockMonitor(url):` samples until closed, into the step `begin()`
    was last given."""

    def __init__(self, url: str, interval: float = INTERVAL_S) -> None:
        self.url = url
        self.interval = interval
        self._step: StepResult | None = None
        self._sleeping: set[int] = set()
        self._conn: asyncpg.Connection | None = None
        self._task: asyncio.Task[None] | None = None
        self._sql = ""

    def begin(self, step: StepResult) -> None:
        self._step = step

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def start(self) -> None:
        self._conn = await connect(self.url, "lock monitor")
        version = int(await self._conn.fetchval("SELECT current_setting('server_version_num')"))
        self._sql = _SAMPLE.format(since=_SINCE_14 if version >= 140000 else _SINCE_OLD)
        self._task = asyncio.create_task(self._run())

    async def aclose(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            # Cancelled, or ended by a failed sample (the figures stop there).
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close(timeout=5)

    async def _run(self) -> None:
        assert self._conn is not None
        while True:
            rows = await self._conn.fetch(self._sql, f"{APP}%")
            if self._step is not None:
                self._record(self._step, rows)
            await asyncio.sleep(self.interval)

    def _record(self, step: StepResult, rows: list[asyncpg.Record]) -> None:
        sleeping = set()
        for row in rows:
            waited = float(row["lock_ms"] or 0.0)
            step.lock_wait_ms_max = max(step.lock_wait_ms_max, waited)
            if row["ours"]:
                continue
            step.tool_lock_wait_ms_max = max(step.tool_lock_wait_ms_max, waited)
            if row["sleeping"]:
                sleeping.add(row["pid"])
                if row["pid"] not in self._sleeping:
                    step.retries += 1
        self._sleeping = sleeping
