"""The load `auth-toolkit rehearse` puts on the copy while the playbook runs: writers
and readers on every audited table, like the service's own.

- Writes (`--write-rate` per second over all tables, on `--writers` sessions):
  half inserts (a new row, see `rehearse_tables`), three in ten updates of a user
  column, two in ten deletes; updates and deletes touch only rows the load
  inserted, so the rows that were there (and the orphans among them) stay as they
  were. A share (`--unknown-share`) of inserts and updates references a user id
  auth-service never issued.
- Reads (`--read-rate`, on `--readers` sessions): up to 20 rows of one user, by
  the user column, as a service's lookups do.

The load is open: operation k is due at start + k / rate whatever happened to the
ones before, and its latency runs from when it was due, so a write stuck behind a
lock delays the ones queued after it and they all show it (no coordinated
omission). What the load itself provokes is told apart from failures: a users
constraint rejecting an unknown user (`fk_rejected`, expected while the
constraint is there), a duplicate key, a parent row it deleted or a CHECK
(`conflict`); anything else is an `error`.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Self

import asyncpg

from auth_client.toolkit.rehearse_copy import APP
from auth_client.toolkit.rehearse_report import Sample

if TYPE_CHECKING:
    from types import TracebackType

    from auth_client.toolkit.rehearse_tables import TableModel, UserPool, UserRef

__all__ = ["Load", "LoadConfig"]

_CONFLICTS = (
    asyncpg.UniqueViolationError,
    asyncpg.CheckViolationError,
    asyncpg.NotNullViolationError,
    asyncpg.ExclusionViolationError,
)
_GONE = (asyncpg.InterfaceError, asyncpg.ConnectionDoesNotExistError, OSError)
STATEMENT_TIMEOUT = "60s"  # a write stuck longer than this counts as failed
_STOP_WAIT_S = 30.0
_Row = tuple[int, str]  # (tableoid, ctid) of a row the load inserted


@dataclass(frozen=True, slots=True)
class LoadConfig:
    write_rate: float = 50.0
    read_rate: float = 50.0
    writers: int = 4
    readers: int = 2
    unknown_share: float = 0.05

    def __post_init__(self) -> None:
        if self.write_rate <= 0 or self.read_rate < 0:
            raise ValueError("--write-rate must be above 0 and --read-rate at least 0")
        if self.writers < 1 or self.readers < (1 if self.read_rate else 0):
            raise ValueError("--writers must be at least 1 (and --readers with a --read-rate)")
        if not 0 <= self.unknown_share <= 1:
            raise ValueError("--unknown-share must be between 0 and 1")

    def describe(self) -> str:
        return (
            f"{self.write_rate:g} writes/s on {self.writers} sessions, {self.read_rate:g}"
            f" reads/s on {self.readers}, {self.unknown_share:.0%} of the writes for unknown users"
        )


class _Schedule:
    """Operation k is due at start + k / rate."""

    def __init__(self, rate: float) -> None:
        self._interval = 1.0 / rate
        self._next = 0.0

    def take(self) -> float:
        due, self._next = self._next, self._next + self._interval
        return due


def _outcome(exc: BaseException, table: TableModel) -> tuple[str, str | None]:
    if isinstance(exc, asyncpg.ForeignKeyViolationError):
        name = exc.constraint_name
        return ("fk_rejected" if name in table.constraints else "conflict"), None
    if isinstance(exc, _CONFLICTS):
        return "conflict", None
    return "error", f"{type(exc).__name__}: {exc}"


class Load:
    """`async with Load(url, tables, users, config) as load:` runs until closed;
    `samples` holds every operation, `now()` the seconds since it started."""

    def __init__(
        self,
        url: str,
        tables: list[TableModel],
        users: UserPool,
        config: LoadConfig,
        *,
        rng: random.Random | None = None,
    ) -> None:
        self.url = url
        self.config = config
        self.users = users
        self.samples: list[Sample] = []
        self._readable = [t for t in tables if t.refs]
        self._writable = [t for t in self._readable if t.templates]
        self._own: dict[str, list[_Row]] = {t.sql_table: [] for t in tables}
        self._rng = rng or random.Random()  # noqa: S311 - a load mix, not a secret
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._start = 0.0

    @property
    def modelled(self) -> set[str]:
        """Tables the load writes to."""
        return {t.sql_table for t in self._writable}

    def now(self) -> float:
        return asyncio.get_running_loop().time() - self._start

    async def __aenter__(self) -> Self:
        self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def start(self) -> None:
        self._start = asyncio.get_running_loop().time()
        writes, reads = _Schedule(self.config.write_rate), None
        if self._writable:
            self._tasks += [
                asyncio.create_task(self._worker(writes, write=True))
                for _ in range(self.config.writers)
            ]
        if self._readable and self.config.read_rate:
            reads = _Schedule(self.config.read_rate)
            self._tasks += [
                asyncio.create_task(self._worker(reads, write=False))
                for _ in range(self.config.readers)
            ]

    async def aclose(self) -> None:
        """Stop: operations under way may finish (bounded), then every session closes."""
        self._stop.set()
        tasks, self._tasks = self._tasks, []
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=_STOP_WAIT_S)
        for task in pending:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _connect(self) -> asyncpg.Connection:
        return await asyncpg.connect(
            self.url,
            timeout=10,
            server_settings={
                "application_name": f"{APP} (load)",
                "statement_timeout": STATEMENT_TIMEOUT,
            },
        )

    async def _wait_until(self, due: float) -> bool:
        """False when the load stops first."""
        delay = due - self.now()
        if delay > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), delay)
        return not self._stop.is_set()

    async def _worker(self, schedule: _Schedule, *, write: bool) -> None:
        conn: asyncpg.Connection | None = None
        try:
            while await self._wait_until(due := schedule.take()):
                started = self.now()
                try:
                    if conn is None or conn.is_closed():
                        conn = await self._connect()
                    table, kind, outcome, error = await (
                        self._write(conn) if write else self._read(conn)
                    )
                except (*_GONE, TimeoutError, asyncpg.PostgresError) as exc:
                    table, kind, outcome = "-", "write" if write else "read", "error"
                    error = f"{type(exc).__name__}: {exc}"
                    if conn is not None and isinstance(exc, _GONE):
                        conn.terminate()
                ended = self.now()
                self.samples.append(
                    Sample(
                        due,
                        (ended - due) * 1000,
                        (ended - started) * 1000,
                        table,
                        kind,
                        outcome,
                        error,
                    )
                )
        except asyncio.CancelledError:
            if conn is not None:  # stuck past the stop bound: drop the session
                conn.terminate()
                conn = None
            raise
        finally:
            if conn is not None:
                with contextlib.suppress(Exception):
                    await conn.close(timeout=5)

    # -- writes ---------------------------------------------------------------

    async def _write(self, conn: asyncpg.Connection) -> tuple[str, str, str, str | None]:
        table = self._rng.choice(self._writable)
        own = self._own[table.sql_table]
        roll = self._rng.random()
        if roll < 0.5 or not own:
            kind, call = "insert", self._insert(conn, table)
        elif roll < 0.8:
            kind, call = "update", self._update(conn, table, own)
        else:
            kind, call = "delete", self._delete(conn, table, own)
        try:
            await call
        except (asyncpg.PostgresError, TimeoutError) as exc:
            outcome, error = _outcome(exc, table)
            return table.sql_table, kind, outcome, error
        return table.sql_table, kind, "ok", None

    def _user_values(self, ref: UserRef, *, unknown: bool) -> dict[str, str]:
        row = self._rng.choice(self.users.active)
        values = {c: row[r] for c, r in zip(ref.columns, ref.referenced, strict=True)}
        if unknown and ref.key is not None:
            values[ref.key] = self._rng.choice(self.users.unknown)
        return values

    def _unknown_ref(self, table: TableModel) -> UserRef | None:
        if self._rng.random() >= self.config.unknown_share:
            return None
        return self._rng.choice(table.refs)

    async def _insert(self, conn: asyncpg.Connection, table: TableModel) -> None:
        values = dict(
            zip((c[0] for c in table.columns), self._rng.choice(table.templates), strict=True)
        )
        for column in table.fresh:
            if column in values:
                values[column] = table.next_value(column)
        unknown = self._unknown_ref(table)
        for ref in table.refs:
            values.update(self._user_values(ref, unknown=ref is unknown))
        columns = ", ".join(sql for _, sql, _ in table.columns)
        params = ", ".join(f"${i}::text::{t}" for i, (_, _, t) in enumerate(table.columns, 1))
        row = await conn.fetchrow(
            f"INSERT INTO {table.sql_table} ({columns}) VALUES ({params})"  # noqa: S608
            " RETURNING tableoid::int8, ctid::text",
            *(values[name] for name, _, _ in table.columns),
        )
        if row is not None:
            self._own[table.sql_table].append((int(row[0]), str(row[1])))

    async def _update(self, conn: asyncpg.Connection, table: TableModel, own: list[_Row]) -> None:
        index = self._rng.randrange(len(own))
        ref = self._rng.choice(table.refs)
        values = self._user_values(ref, unknown=self._unknown_ref(table) is not None)
        types = {name: t for name, _, t in table.columns}
        sets = ", ".join(
            f"{_ident(c)} = ${i}::text::{types.get(c, 'text')}" for i, c in enumerate(values, 3)
        )
        row = await conn.fetchrow(
            f"UPDATE {table.sql_table} SET {sets}"  # noqa: S608
            " WHERE tableoid = $1::oid AND ctid = $2::text::tid RETURNING tableoid::int8, ctid::text",
            *own[index],
            *values.values(),
        )
        if row is None:
            own.pop(index)  # gone (a cascade deleted it)
        else:
            own[index] = (int(row[0]), str(row[1]))

    async def _delete(self, conn: asyncpg.Connection, table: TableModel, own: list[_Row]) -> None:
        tableoid, ctid = own.pop(self._rng.randrange(len(own)))
        await conn.execute(
            f"DELETE FROM {table.sql_table} WHERE tableoid = $1::oid AND ctid = $2::text::tid",  # noqa: S608
            tableoid,
            ctid,
        )

    # -- reads ----------------------------------------------------------------

    async def _read(self, conn: asyncpg.Connection) -> tuple[str, str, str, str | None]:
        table = self._rng.choice(self._readable)
        ref = self._rng.choice(table.refs)
        column = ref.key or ref.columns[0]
        referenced = ref.referenced[ref.columns.index(column)]
        user = self._rng.choice(self.users.active)[referenced]
        cast = next((t for name, _, t in table.columns if name == column), "text")
        try:
            await conn.fetch(
                f"SELECT * FROM {table.sql_table} WHERE {_ident(column)} = $1::text::{cast}"  # noqa: S608
                " LIMIT 20",
                user,
            )
        except (asyncpg.PostgresError, TimeoutError) as exc:
            return table.sql_table, "read", "error", f"{type(exc).__name__}: {exc}"
        return table.sql_table, "read", "ok", None


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'
