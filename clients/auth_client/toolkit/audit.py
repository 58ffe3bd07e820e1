"""`auth-toolkit fk-audit`: list the foreign keys that reference the users table.

Everything comes from pg_catalog, so any schema, any constraint name and multi-column
keys are found. Resolution of the referenced table (`--referenced-table`):

- `users` (the default) means `public.users`. An unqualified name always means
  schema `public`; it is *not* looked up through `search_path`, so a table merely
  named `users` in another schema (say `legacy.users`) is never confused with the
  canonical one, whatever the connecting role's search path is.
- `schema.table` names one table exactly; quote parts that need it, as in SQL:
  `'"Legacy Data".users'`.

Constraints are matched by the referenced table's oid (`pg_constraint.confrelid`).
Only top-level constraints are listed: on a partitioned table each partition holds a
child copy of the constraint, which the parent's constraint owns.

The session runs with an empty `search_path`, so `pg_get_constraintdef()` prints
every table name schema-qualified and the emitted migration means the same thing
whatever search path dbmate later connects with.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import asyncpg

from auth_client.toolkit.actions import applicable, split_soft_delete
from auth_client.toolkit.audit_catalog import RESOLVE, foreign_keys_query

if TYPE_CHECKING:
    from collections.abc import Callable

ACTIONS = {"a": "NO ACTION", "r": "RESTRICT", "c": "CASCADE", "n": "SET NULL", "d": "SET DEFAULT"}
MATCH_TYPES = {"s": "SIMPLE", "f": "FULL", "p": "PARTIAL"}


class AuditError(RuntimeError):
    """The audit could not run; the message says why in one line."""


@dataclass(frozen=True, slots=True)
class Scope:
    """Which referencing tables an audit (and the migrations emitted from it) covers:
    those in `schemas` (all when empty), except `exclude_tables` (SCHEMA.TABLE, or
    TABLE for schema public). One team's share of a shared database."""

    schemas: tuple[str, ...] = ()
    exclude_tables: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        """A short name for file names: the schemas, or '' for everything."""
        return "_".join(self.schemas)

    def describe(self) -> str:
        parts = [f"schema {', '.join(self.schemas)}"] if self.schemas else ["every schema"]
        if self.exclude_tables:
            parts.append(f"except {', '.join(self.exclude_tables)}")
        return " ".join(parts)


@dataclass(frozen=True, slots=True)
class ForeignKey:
    """One foreign key constraint that references the audited table."""

    schema: str
    table: str
    constraint: str
    columns: tuple[str, ...]
    referenced_columns: tuple[str, ...]
    on_delete: str
    on_delete_columns: tuple[str, ...] | None
    on_update: str
    match: str
    deferrable: bool
    initially_deferred: bool
    validated: bool
    enforced: bool
    partitioned: bool
    index: str | None
    row_estimate: int | None
    definition: str
    # Referencing columns declared NOT NULL, and the table's soft-delete column
    # (`deleted_at`, or a legacy boolean flag; see `actions`).
    not_null_columns: tuple[str, ...]
    soft_delete: str | None
    soft_delete_type: str | None
    # SQL spellings, quoted by PostgreSQL itself (quote_ident / format('%I')).
    sql_table: str
    sql_constraint: str
    sql_columns: tuple[str, ...]
    sql_referenced_table: str
    sql_referenced_columns: tuple[str, ...]
    # The referencing columns' types as PostgreSQL prints them (`uuid`, `text`,
    # `character varying(36)`), in constraint order; empty in inventories written
    # before they were recorded.
    column_types: tuple[str, ...] = ()

    @property
    def qualified_table(self) -> str:
        return self.sql_table

    @property
    def not_null(self) -> bool:
        """Every referencing column is NOT NULL: nothing can be set to NULL."""
        return set(self.not_null_columns) == set(self.columns)

    @property
    def actions(self) -> tuple[str, ...]:
        """The `reconcile --action`s that can apply to this table and column."""
        return applicable(self)

    @property
    def on_delete_text(self) -> str:
        if self.on_delete_columns:
            return f"{self.on_delete} ({', '.join(self.on_delete_columns)})"
        return self.on_delete

    @property
    def deferrable_text(self) -> str:
        if not self.deferrable:
            return "no"
        return "deferred" if self.initially_deferred else "immediate"

    def to_json(self) -> dict[str, Any]:
        """What `fk-audit --format json` shows."""
        data = {k: v for k, v in self.to_record().items() if not k.startswith("sql_")}
        data["not_null"] = self.not_null
        data["actions"] = list(self.actions)
        return data

    def to_record(self) -> dict[str, Any]:
        """Every field, JSON-ready (the inventory `--emit-migration` writes)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_record(cls, data: dict[str, Any]) -> ForeignKey:
        """The inverse of `to_record`."""
        fields: dict[str, Any] = {
            k: tuple(v) if isinstance(v, list) else v for k, v in data.items()
        }
        return cls(**fields)


@dataclass(frozen=True, slots=True)
class AuditResult:
    """The referenced table and every foreign key pointing at it."""

    referenced_schema: str
    referenced_table: str
    sql_referenced_table: str
    database: str
    server_version: str
    foreign_keys: tuple[ForeignKey, ...]
    scope: Scope = Scope()

    @property
    def missing_indexes(self) -> tuple[ForeignKey, ...]:
        return tuple(fk for fk in self.foreign_keys if fk.index is None)

    def to_json(self) -> dict[str, Any]:
        return {
            "referenced_table": self.sql_referenced_table,
            "database": self.database,
            "scope": {
                "schemas": list(self.scope.schemas),
                "exclude_tables": list(self.scope.exclude_tables),
            },
            "count": len(self.foreign_keys),
            "missing_indexes": len(self.missing_indexes),
            "foreign_keys": [fk.to_json() for fk in self.foreign_keys],
        }


async def split_name(
    conn: asyncpg.Connection, name: str, flag: str, error: type[Exception] = AuditError
) -> tuple[str, str]:
    """(schema, table) of `name` as SQL reads it; unqualified means schema public.
    `error` (the caller's one-line error class) when it is no table name."""
    try:
        parts: list[str] = await conn.fetchval("SELECT pg_catalog.parse_ident($1)", name)
    except asyncpg.PostgresError as exc:
        raise error(f"{flag} {name!r} is not a valid table name") from exc
    if len(parts) == 1:
        parts = ["public", parts[0]]
    if len(parts) != 2:
        raise error(f"{flag} {name!r}: expected TABLE or SCHEMA.TABLE")
    return parts[0], parts[1]


async def resolve_table(conn: asyncpg.Connection, name: str) -> tuple[str, str, str, int]:
    """(schema, table, sql_name, oid) of `name`; unqualified names mean schema public."""
    parts = await split_name(conn, name, "--referenced-table")
    row = await conn.fetchrow(RESOLVE, parts[0], parts[1])
    shown = ".".join(parts)
    if row is None:
        raise AuditError(f"table {shown} does not exist in this database")
    if row["relkind"] not in ("r", "p"):
        raise AuditError(f"{shown} is not a table (foreign keys can only reference tables)")
    return str(row["nspname"]), str(row["relname"]), str(row["sql_name"]), int(row["oid"])


def _foreign_key(row: asyncpg.Record) -> ForeignKey:
    reltuples = float(row["reltuples"])
    delset = row["on_delete_columns"]
    soft_delete, soft_delete_type = split_soft_delete(row["soft_delete"])
    return ForeignKey(
        schema=row["schema"],
        table=row["table"],
        constraint=row["constraint"],
        columns=tuple(row["columns"]),
        referenced_columns=tuple(row["referenced_columns"]),
        on_delete=ACTIONS[row["deltype"]],
        on_delete_columns=tuple(delset) if delset else None,
        on_update=ACTIONS[row["updtype"]],
        match=MATCH_TYPES[row["matchtype"]],
        deferrable=row["condeferrable"],
        initially_deferred=row["condeferred"],
        validated=row["convalidated"],
        enforced=row["enforced"],
        partitioned=row["partitioned"],
        index=row["index"],
        # reltuples is -1 until the table was first vacuumed or analyzed.
        row_estimate=round(reltuples) if reltuples >= 0 else None,
        definition=row["definition"],
        not_null_columns=tuple(row["not_null_columns"]),
        soft_delete=soft_delete,
        soft_delete_type=soft_delete_type,
        sql_table=row["sql_table"],
        sql_constraint=row["sql_constraint"],
        sql_columns=tuple(row["sql_columns"]),
        sql_referenced_table=row["sql_referenced_table"],
        sql_referenced_columns=tuple(row["sql_referenced_columns"]),
        column_types=tuple(row["column_types"]),
    )


async def _in_scope(conn: asyncpg.Connection, scope: Scope) -> Callable[[ForeignKey], bool]:
    """A filter for `scope`; AuditError for a schema or table that does not exist
    (a typo must not silently widen or narrow a migration)."""
    for schema in scope.schemas:
        if not await conn.fetchval(
            "SELECT EXISTS (SELECT FROM pg_catalog.pg_namespace WHERE nspname = $1)", schema
        ):
            raise AuditError(f"--schema {schema!r}: no such schema in this database")
    excluded: set[tuple[str, str]] = set()
    for name in scope.exclude_tables:
        parts = await split_name(conn, name, "--exclude-table")
        if await conn.fetchrow(RESOLVE, *parts) is None:
            raise AuditError(f"--exclude-table {name!r}: no such table in this database")
        excluded.add(parts)
    schemas = set(scope.schemas)
    return lambda fk: (
        (not schemas or fk.schema in schemas) and ((fk.schema, fk.table) not in excluded)
    )


async def audit_connection(
    conn: asyncpg.Connection, referenced_table: str = "users", scope: Scope | None = None
) -> AuditResult:
    """Run the audit on an open connection. Sets the session's search_path to ''."""
    await conn.execute("SELECT pg_catalog.set_config('search_path', '', false)")
    scope = scope or Scope()
    schema, table, sql_name, oid = await resolve_table(conn, referenced_table)
    keep = await _in_scope(conn, scope)
    version_num = int(
        await conn.fetchval("SELECT pg_catalog.current_setting('server_version_num')")
    )
    rows = await conn.fetch(foreign_keys_query(version_num), oid)
    return AuditResult(
        referenced_schema=schema,
        referenced_table=table,
        sql_referenced_table=sql_name,
        database=str(await conn.fetchval("SELECT pg_catalog.current_database()")),
        server_version=str(
            await conn.fetchval("SELECT pg_catalog.current_setting('server_version')")
        ),
        foreign_keys=tuple(fk for fk in map(_foreign_key, rows) if keep(fk)),
        scope=scope,
    )


async def connect(database_url: str, connect_timeout: float = 10.0) -> asyncpg.Connection:
    """Open one connection; AuditError (without the URL, which may hold a password)."""
    try:
        return await asyncpg.connect(database_url, timeout=connect_timeout)
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise AuditError(f"cannot connect to the database: {type(exc).__name__}: {exc}") from exc


async def audit(
    database_url: str, referenced_table: str = "users", scope: Scope | None = None
) -> AuditResult:
    conn = await connect(database_url)
    try:
        return await audit_connection(conn, referenced_table, scope)
    finally:
        await conn.close()
