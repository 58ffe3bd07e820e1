"""What a reconcile action may do to a table, decided in one place for `fk-audit`
(which reports it per foreign key) and `reconcile` (which refuses what cannot apply).

- `delete` always applies (its cascades are checked before acting, see
  `reconcile_cascade`).
- `soft-delete` needs a `deleted_at` timestamp column; it sets `deleted_at = now()`.
- `set-null` needs a nullable column: never on a NOT NULL column (anonymise to a
  tombstone user in your `user_deleted` handler, or soft-delete, instead).

A table's soft-delete column is `deleted_at` (a timestamp), or a legacy boolean
flag named `is_deleted` or `deleted`. Rows marked by either are "already
soft-deleted": reconcile reports them apart and never counts or changes them. Only
`deleted_at` makes `soft-delete` apply (the toolkit does not write legacy flags).
"""

from __future__ import annotations

from typing import Protocol

ACTIONS = ("delete", "soft-delete", "set-null")
TIMESTAMP_COLUMN = "deleted_at"
LEGACY_FLAGS = ("is_deleted", "deleted")
TIMESTAMP_TYPES = frozenset({"timestamp with time zone", "timestamp without time zone"})

__all__ = [
    "ACTIONS",
    "applicable",
    "live_condition",
    "soft_delete_column_sql",
    "why_not",
]


def soft_delete_column_sql(relation: str) -> str:
    """A catalog subquery: `name:type` of the soft-delete column of `relation` (an
    oid expression), or NULL. `deleted_at` wins over a legacy flag."""
    return f"""(SELECT d.attname::text || ':' || d.atttypid::pg_catalog.regtype::text
      FROM pg_catalog.pg_attribute d
      WHERE d.attrelid = {relation} AND d.attnum > 0 AND NOT d.attisdropped
        AND (d.attname = '{TIMESTAMP_COLUMN}'
             OR (d.attname IN ('{LEGACY_FLAGS[0]}', '{LEGACY_FLAGS[1]}')
                 AND d.atttypid = 'pg_catalog.bool'::pg_catalog.regtype))
      ORDER BY d.attname = '{TIMESTAMP_COLUMN}' DESC, d.attname LIMIT 1)"""  # noqa: S608 - constants


def split_soft_delete(value: str | None) -> tuple[str | None, str | None]:
    """(column, type) from what `soft_delete_column_sql` returns."""
    if value is None:
        return None, None
    name, _, type_name = value.partition(":")
    return name, type_name


def live_condition(column: str | None, type_name: str | None) -> str | None:
    """SQL that is true for rows not soft-deleted (None: the table has no marker).
    `column` is the column's name as stored; it is one of the fixed names above."""
    if column is None:
        return None
    if type_name == "boolean":
        return f'"{column}" IS NOT TRUE'
    return f'"{column}" IS NULL'


class Column(Protocol):
    """What decides the actions: a foreign key (audit) or a column (reconcile)."""

    @property
    def not_null(self) -> bool: ...
    @property
    def soft_delete(self) -> str | None: ...
    @property
    def soft_delete_type(self) -> str | None: ...


def applicable(column: Column) -> tuple[str, ...]:
    """The reconcile actions that can apply to `column`."""
    return tuple(a for a in ACTIONS if why_not(a, column) is None)


def why_not(action: str, column: Column) -> str | None:
    """Why `action` cannot apply to `column` (None when it can)."""
    not_null, soft_delete = column.not_null, column.soft_delete
    soft_delete_type = column.soft_delete_type
    if action == "set-null" and not_null:
        return "the column is NOT NULL"
    if action == "soft-delete" and (
        soft_delete != TIMESTAMP_COLUMN or soft_delete_type not in TIMESTAMP_TYPES
    ):
        if soft_delete is None:
            return "the table has no deleted_at column"
        return f"the table has {soft_delete} of type {soft_delete_type}, not a deleted_at timestamp"
    return None
