"""What `auth-toolkit reconcile` runs on: its options, the table and column as
introspected, and the SQL that scans and fixes them."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import asyncpg

from auth_client._errors import InvalidRequestError
from auth_client._models import parse_user_id
from auth_client.contract import MAX_BATCH_IDS
from auth_client.toolkit.actions import (
    ACTIONS,
    applicable,
    live_condition,
    soft_delete_column_sql,
    split_soft_delete,
    why_not,
)
from auth_client.toolkit.audit import split_name
from auth_client.toolkit.reconcile_model import ReconcileError

_ID_TYPES = {"uuid", "text", "character varying"}


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
    # Refuse an action when more than this share of the live rows scanned are
    # orphans: an empty or wrong auth-service makes every row look like one.
    max_orphan_fraction: float = 0.05
    # Let an action change rows of other tables through ON DELETE / ON UPDATE rules.
    allow_cascade: bool = False
    # Ids that are no users on purpose (a tombstone): never sent, counted or changed.
    ignore_ids: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.action is not None and self.action not in ACTIONS:
            raise ReconcileError(f"--action must be one of {', '.join(ACTIONS)}")
        if not 1 <= self.batch_size <= MAX_BATCH_IDS:
            raise ReconcileError(f"--batch-size must be 1 to {MAX_BATCH_IDS}")
        if self.fix_rows < 1:
            raise ReconcileError("--fix-rows must be at least 1")
        if self.max_batches is not None and self.max_batches < 1:
            raise ReconcileError("--max-batches must be at least 1")
        if not 0 <= self.max_orphan_fraction <= 1:
            raise ReconcileError("--max-orphan-fraction must be between 0 and 1")
        try:
            object.__setattr__(
                self, "ignore_ids", tuple(str(parse_user_id(i)) for i in self.ignore_ids)
            )
        except InvalidRequestError as exc:
            raise ReconcileError("--ignore-id must be a UUID") from exc

    @property
    def applies(self) -> bool:
        return self.action is not None and not self.dry_run


@dataclass(frozen=True, slots=True)
class Target:
    """The table and column, as introspected."""

    shown: str  # schema.table, as given back to the user
    oid: int
    sql_table: str
    sql_column: str
    is_uuid: bool
    not_null: bool
    soft_delete: str | None
    soft_delete_type: str | None
    indexed: bool

    @property
    def live(self) -> str | None:
        """SQL true for rows not soft-deleted; None when the table has no marker."""
        return live_condition(self.soft_delete, self.soft_delete_type)

    @property
    def actions(self) -> tuple[str, ...]:
        return applicable(self)


_INSPECT = f"""
SELECT c.oid::int8 AS oid, pg_catalog.format('%I.%I', n.nspname, c.relname) AS sql_table,
       pg_catalog.quote_ident(a.attname) AS sql_column,
       a.atttypid::pg_catalog.regtype::text AS type, a.attnotnull AS not_null,
       {soft_delete_column_sql("c.oid")} AS soft_delete,
       EXISTS (SELECT FROM pg_catalog.pg_index i
               WHERE i.indrelid = c.oid AND i.indisvalid AND i.indpred IS NULL
                 AND i.indkey[0] = a.attnum) AS indexed
FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_catalog.pg_attribute a
       ON a.attrelid = c.oid AND a.attname = $3 AND a.attnum > 0 AND NOT a.attisdropped
WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p')
"""  # noqa: S608 - constant fragments


async def inspect(conn: asyncpg.Connection, options: Options) -> Target:
    """Resolve `--table` (unqualified = schema public) and `--column` (its name as
    stored, no quoting) and check that the action can apply."""
    parts = await split_name(conn, options.table, "--table", ReconcileError)
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
    soft_delete, soft_delete_type = split_soft_delete(row["soft_delete"])
    target = Target(
        shown=shown,
        oid=row["oid"],
        sql_table=row["sql_table"],
        sql_column=row["sql_column"],
        is_uuid=row["type"] == "uuid",
        not_null=row["not_null"],
        soft_delete=soft_delete,
        soft_delete_type=soft_delete_type,
        indexed=row["indexed"],
    )
    if options.action is not None:
        why = why_not(options.action, target)
        if why is not None:
            raise ReconcileError(
                f"--action {options.action} cannot apply to {shown}.{options.column}: {why}"
                f" (actions that apply: {', '.join(target.actions)})"
            )
    return target


def scan_sql(target: Target, *, first: bool) -> str:
    """One batch of distinct ids after the cursor, with their live and soft-deleted
    row counts."""
    t, c = target.sql_table, target.sql_column
    where = [f"{c} IS NOT NULL"] + ([] if first else [f"{c} > $2"])
    live = target.live
    counts = (
        f"count(*) FILTER (WHERE {live}), count(*) FILTER (WHERE NOT ({live}))"
        if live
        else "count(*), 0"
    )
    return (
        f"SELECT {c}, {counts} FROM {t} WHERE {' AND '.join(where)}"  # noqa: S608
        f" GROUP BY {c} ORDER BY {c} LIMIT $1"
    )


def rows_sql(target: Target, columns: str) -> str:
    """The live rows holding an id of $1."""
    live = f" AND {target.live}" if target.live else ""
    return f"SELECT {columns} FROM {target.sql_table} WHERE {target.sql_column} = ANY($1){live}"  # noqa: S608


def fix_sql(target: Target, action: str) -> str:
    """One transaction's worth: at most $2 live rows among those holding an id of $1.
    (On a partitioned table ctids repeat across partitions; rows matched that way
    also hold an orphan id, so they are fixed a little sooner, never wrongly.)"""
    t, c = target.sql_table, target.sql_column
    live = f" AND {target.live}" if target.live else ""
    some = f"ctid = ANY(ARRAY({rows_sql(target, 'ctid')} LIMIT $2))"
    if action == "delete":
        return f"DELETE FROM {t} WHERE {c} = ANY($1){live} AND {some}"  # noqa: S608
    if action == "soft-delete":
        return f"UPDATE {t} SET deleted_at = now() WHERE {c} = ANY($1){live} AND {some}"  # noqa: S608
    return f"UPDATE {t} SET {c} = NULL WHERE {c} = ANY($1){live} AND {some}"  # noqa: S608


def cursor_value(target: Target, text: str) -> object:
    if not target.is_uuid:
        return text
    try:
        return uuid.UUID(text)
    except ValueError as exc:
        raise ReconcileError("the resume cursor must be a UUID for a uuid column") from exc


def classify(
    target: Target, values: list[object], ignore: tuple[str, ...]
) -> tuple[dict[str, list[object]], list[str]]:
    """Group raw values by canonical UUID text (ignored ids left out); collect the
    values that are not UUIDs."""
    by_id: dict[str, list[object]] = {}
    invalid: list[str] = []
    for value in values:
        if target.is_uuid:
            key = str(value)
        else:
            try:
                key = str(parse_user_id(str(value)))
            except InvalidRequestError:
                invalid.append(str(value))
                continue
        if key not in ignore:
            by_id.setdefault(key, []).append(value)
    return by_id, invalid
