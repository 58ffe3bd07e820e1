"""`auth-toolkit reconcile`: find the rows of a service table whose user id is not an
active user of auth-service, and optionally fix them.

- The distinct ids of the column are read in keyset-paginated batches
  (`WHERE col > last ORDER BY col LIMIT n`): no long transaction, no OFFSET.
- Each batch is checked with one `BatchUserExists` call. A deleted user
  (state DELETED) and an id that never existed (NOT_FOUND) are both orphans and
  are reported apart. In a text column, values that are not a hyphenated UUID are
  reported as invalid and never sent or touched.
- Dry run by default. `--action delete|soft-delete|set-null` fixes the orphans of
  a batch before moving on, at most `fix_rows` rows per transaction, each
  transaction committed on its own (soft-delete sets `deleted_at = now()` where it
  is null; set-null needs a nullable column).
- After each batch the cursor is saved to the state file (if any): a stopped run
  continues where it was; `--resume-from ID` starts after ID. `--rate` limits
  batches per second; progress goes to stderr.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING

import asyncpg

from auth_client._errors import InvalidRequestError
from auth_client._models import parse_user_id
from auth_client.contract import MAX_BATCH_IDS
from auth_client.toolkit.reconcile_model import IdState, ReconcileError, Report

if TYPE_CHECKING:
    from auth_client.toolkit.reconcile_checker import Pacer, UserStates
    from auth_client.toolkit.reconcile_model import Progress, StateFile

ACTIONS = ("delete", "soft-delete", "set-null")
_ID_TYPES = {"uuid", "text", "character varying"}
_TIMESTAMPS = {"timestamp with time zone", "timestamp without time zone"}


@dataclass(frozen=True, slots=True)
class Options:
    table: str
    column: str
    action: str | None = None
    dry_run: bool = False
    batch_size: int = 500
    fix_rows: int = 1000
    resume_from: str | None = None
    max_batches: int | None = None

    def __post_init__(self) -> None:
        if self.action is not None and self.action not in ACTIONS:
            raise ReconcileError(f"--action must be one of {', '.join(ACTIONS)}")
        if not 1 <= self.batch_size <= MAX_BATCH_IDS:
            raise ReconcileError(f"--batch-size must be 1 to {MAX_BATCH_IDS}")
        if self.fix_rows < 1:
            raise ReconcileError("--fix-rows must be at least 1")
        if self.max_batches is not None and self.max_batches < 1:
            raise ReconcileError("--max-batches must be at least 1")

    @property
    def applies(self) -> bool:
        return self.action is not None and not self.dry_run


@dataclass(frozen=True, slots=True)
class Target:
    """The table and column, as introspected."""

    shown: str  # schema.table, as given back to the user
    sql_table: str
    sql_column: str
    is_uuid: bool
    not_null: bool
    deleted_at_type: str | None
    indexed: bool


_INSPECT = """
SELECT pg_catalog.format('%I.%I', n.nspname, c.relname) AS sql_table,
       pg_catalog.quote_ident(a.attname) AS sql_column,
       a.atttypid::pg_catalog.regtype::text AS type, a.attnotnull AS not_null,
       (SELECT d.atttypid::pg_catalog.regtype::text FROM pg_catalog.pg_attribute d
         WHERE d.attrelid = c.oid AND d.attname = 'deleted_at' AND d.attnum > 0
           AND NOT d.attisdropped) AS deleted_at_type,
       EXISTS (SELECT FROM pg_catalog.pg_index i
               WHERE i.indrelid = c.oid AND i.indisvalid AND i.indpred IS NULL
                 AND i.indkey[0] = a.attnum) AS indexed
FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_catalog.pg_attribute a
       ON a.attrelid = c.oid AND a.attname = $3 AND a.attnum > 0 AND NOT a.attisdropped
WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p')
"""


async def inspect(conn: asyncpg.Connection, options: Options) -> Target:
    """Resolve `--table` (unqualified = schema public) and `--column` (its name as
    stored, no quoting) and check that the action can apply."""
    try:
        parts: list[str] = await conn.fetchval("SELECT pg_catalog.parse_ident($1)", options.table)
    except asyncpg.PostgresError as exc:
        raise ReconcileError(f"--table {options.table!r} is not a valid table name") from exc
    if len(parts) == 1:
        parts = ["public", parts[0]]
    if len(parts) != 2:
        raise ReconcileError(f"--table {options.table!r}: expected SCHEMA.TABLE")
    shown = ".".join(parts)
    row = await conn.fetchrow(_INSPECT, parts[0], parts[1], options.column)
    if row is None:
        raise ReconcileError(f"table {shown} does not exist")
    if row["sql_column"] is None:
        raise ReconcileError(f"table {shown} has no column {options.column!r}")
    if row["type"] not in _ID_TYPES:
        raise ReconcileError(
            f"column {options.column} has type {row['type']}; reconcile reads uuid or text columns"
        )
    target = Target(
        shown=shown,
        sql_table=row["sql_table"],
        sql_column=row["sql_column"],
        is_uuid=row["type"] == "uuid",
        not_null=row["not_null"],
        deleted_at_type=row["deleted_at_type"],
        indexed=row["indexed"],
    )
    if options.action == "soft-delete" and target.deleted_at_type not in _TIMESTAMPS:
        why = "no deleted_at column" if target.deleted_at_type is None else "a deleted_at column"
        why += "" if target.deleted_at_type is None else f" of type {target.deleted_at_type}"
        raise ReconcileError(
            f"table {shown} has {why}: --action soft-delete needs a deleted_at timestamp column"
        )
    if options.action == "set-null" and target.not_null:
        raise ReconcileError(
            f"column {options.column} of {shown} is NOT NULL: --action set-null cannot apply"
            " (use delete or soft-delete)"
        )
    return target


def _scan_sql(target: Target, *, first: bool, live_only: bool) -> str:
    t, c = target.sql_table, target.sql_column
    where = [f"{c} IS NOT NULL"] + ([] if first else [f"{c} > $2"])
    where += ["deleted_at IS NULL"] if live_only else []
    return f"SELECT DISTINCT {c} FROM {t} WHERE {' AND '.join(where)} ORDER BY {c} LIMIT $1"  # noqa: S608


def _fix_sql(target: Target, action: str) -> str:
    """One transaction's worth: at most $2 rows among those holding an id of $1.
    (On a partitioned table ctids repeat across partitions; rows matched that way
    also hold an orphan id, so they are fixed a little sooner, never wrongly.)"""
    t, c = target.sql_table, target.sql_column
    live = " AND deleted_at IS NULL" if action == "soft-delete" else ""
    some = f"ctid = ANY(ARRAY(SELECT ctid FROM {t} WHERE {c} = ANY($1){live} LIMIT $2))"  # noqa: S608
    if action == "delete":
        return f"DELETE FROM {t} WHERE {c} = ANY($1) AND {some}"  # noqa: S608
    if action == "soft-delete":
        return f"UPDATE {t} SET deleted_at = now() WHERE {c} = ANY($1){live} AND {some}"  # noqa: S608
    return f"UPDATE {t} SET {c} = NULL WHERE {c} = ANY($1) AND {some}"  # noqa: S608


async def _fix(
    conn: asyncpg.Connection, target: Target, options: Options, values: list[object]
) -> int:
    assert options.action is not None
    sql = _fix_sql(target, options.action)
    fixed = 0
    while True:
        try:
            async with conn.transaction():
                status = await conn.execute(sql, values, options.fix_rows)
        except asyncpg.PostgresError as exc:
            raise ReconcileError(
                f"--action {options.action} on {target.shown} failed: {exc}"
            ) from exc
        count = int(status.rsplit(" ", 1)[-1])
        fixed += count
        if count == 0:
            return fixed


def _cursor_value(target: Target, text: str) -> object:
    if not target.is_uuid:
        return text
    try:
        return uuid.UUID(text)
    except ValueError as exc:
        raise ReconcileError("the resume cursor must be a UUID for a uuid column") from exc


def _classify(target: Target, values: list[object]) -> tuple[dict[str, list[object]], list[str]]:
    """Group raw values by canonical UUID text; collect the values that are not UUIDs."""
    by_id: dict[str, list[object]] = {}
    invalid: list[str] = []
    for value in values:
        if target.is_uuid:
            by_id.setdefault(str(value), []).append(value)
            continue
        try:
            key = str(parse_user_id(str(value)))
        except InvalidRequestError:
            invalid.append(str(value))
            continue
        by_id.setdefault(key, []).append(value)
    return by_id, invalid


async def reconcile(
    conn: asyncpg.Connection,
    checker: UserStates,
    options: Options,
    *,
    pacer: Pacer,
    progress: Progress,
    state: StateFile | None = None,
) -> Report:
    """Run (or continue) one reconciliation. Raises ReconcileError."""
    await conn.execute("SELECT pg_catalog.set_config('search_path', '', false)")
    target = await inspect(conn, options)
    report = Report(target.shown, options.column, options.action, options.dry_run)
    if state is not None and state.load(report):
        progress.note(f"resuming from state file {state.path} after {report.cursor!r}")
    if options.resume_from is not None:
        report.cursor = options.resume_from
    report.resumed_from = report.cursor
    if not target.indexed:
        progress.note(
            f"warning: no index starts with {target.sql_column}; every batch reads all of"
            f" {target.sql_table} (fk-audit --emit-migration writes one)"
        )
    live_only = options.action == "soft-delete"
    first_sql = _scan_sql(target, first=True, live_only=live_only)
    next_sql = _scan_sql(target, first=False, live_only=live_only)
    this_run = 0
    while options.max_batches is None or this_run < options.max_batches:
        await pacer.wait()
        if report.cursor is None:
            rows = await conn.fetch(first_sql, options.batch_size)
        else:
            rows = await conn.fetch(
                next_sql, options.batch_size, _cursor_value(target, report.cursor)
            )
        if not rows:
            report.complete = True
            break
        values = [row[0] for row in rows]
        by_id, invalid = _classify(target, values)
        keys = list(by_id)
        answers = await checker.states(keys) if keys else []
        deleted = [
            v for k, s in zip(keys, answers, strict=True) if s is IdState.DELETED for v in by_id[k]
        ]
        missing = [
            v
            for k, s in zip(keys, answers, strict=True)
            if s is IdState.NOT_FOUND
            for v in by_id[k]
        ]
        if options.applies and (deleted or missing):
            report.rows_fixed += await _fix(conn, target, options, deleted + missing)
        report.add_batch(
            str(values[-1]),
            len(values),
            [str(v) for v in deleted],
            [str(v) for v in missing],
            invalid,
        )
        this_run += 1
        if state is not None:
            state.save(report)
        progress.update(report)
        if len(rows) < options.batch_size:
            report.complete = True
            break
    if report.complete and state is not None:
        state.remove()
    progress.update(report, final=True)
    return report
