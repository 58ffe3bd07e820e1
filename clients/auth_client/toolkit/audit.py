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
from typing import Any

import asyncpg

ACTIONS = {"a": "NO ACTION", "r": "RESTRICT", "c": "CASCADE", "n": "SET NULL", "d": "SET DEFAULT"}
MATCH_TYPES = {"s": "SIMPLE", "f": "FULL", "p": "PARTIAL"}


class AuditError(RuntimeError):
    """The audit could not run; the message says why in one line."""


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
    # SQL spellings, quoted by PostgreSQL itself (quote_ident / format('%I')).
    sql_table: str
    sql_constraint: str
    sql_columns: tuple[str, ...]

    @property
    def qualified_table(self) -> str:
        return self.sql_table

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
        data = asdict(self)
        for key in ("sql_table", "sql_constraint", "sql_columns"):
            data.pop(key)
        data["columns"] = list(self.columns)
        data["referenced_columns"] = list(self.referenced_columns)
        if self.on_delete_columns is not None:
            data["on_delete_columns"] = list(self.on_delete_columns)
        return data


@dataclass(frozen=True, slots=True)
class AuditResult:
    """The referenced table and every foreign key pointing at it."""

    referenced_schema: str
    referenced_table: str
    sql_referenced_table: str
    database: str
    server_version: str
    foreign_keys: tuple[ForeignKey, ...]

    @property
    def missing_indexes(self) -> tuple[ForeignKey, ...]:
        return tuple(fk for fk in self.foreign_keys if fk.index is None)

    def to_json(self) -> dict[str, Any]:
        return {
            "referenced_table": self.sql_referenced_table,
            "database": self.database,
            "count": len(self.foreign_keys),
            "missing_indexes": len(self.missing_indexes),
            "foreign_keys": [fk.to_json() for fk in self.foreign_keys],
        }


_RESOLVE = """
SELECT n.nspname, c.relname, c.relkind::text AS relkind, c.oid,
       pg_catalog.format('%I.%I', n.nspname, c.relname) AS sql_name
FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = $1 AND c.relname = $2
"""

# Column names of an attnum array, in array order.
_NAMES = """ARRAY(SELECT a.attname::text FROM pg_catalog.unnest({arr}) WITH ORDINALITY k(num, ord)
      JOIN pg_catalog.pg_attribute a ON a.attrelid = {rel} AND a.attnum = k.num ORDER BY k.ord)"""
_QUOTED = """ARRAY(SELECT pg_catalog.quote_ident(a.attname) FROM pg_catalog.unnest({arr})
      WITH ORDINALITY k(num, ord)
      JOIN pg_catalog.pg_attribute a ON a.attrelid = {rel} AND a.attnum = k.num ORDER BY k.ord)"""

# A covering index: valid, not partial, and its first N key columns are exactly the
# N referencing columns (in any order: lookups compare every one of them for equality).
_INDEX = """(SELECT ic.relname::text FROM pg_catalog.pg_index i
      JOIN pg_catalog.pg_class ic ON ic.oid = i.indexrelid
      WHERE i.indrelid = c.conrelid AND i.indisvalid AND i.indisready AND i.indislive
        AND i.indpred IS NULL AND i.indnkeyatts >= pg_catalog.cardinality(c.conkey)
        AND (SELECT pg_catalog.array_agg(k.num ORDER BY k.num)
             FROM pg_catalog.unnest(i.indkey::pg_catalog.int2[]) WITH ORDINALITY k(num, ord)
             WHERE k.ord <= pg_catalog.cardinality(c.conkey))
          = (SELECT pg_catalog.array_agg(k ORDER BY k) FROM pg_catalog.unnest(c.conkey) k)
      ORDER BY i.indnkeyatts, ic.relname LIMIT 1)"""

_FOREIGN_KEYS = f"""
SELECT n.nspname::text AS schema, t.relname::text AS "table", c.conname::text AS constraint,
       {_NAMES.format(arr="c.conkey", rel="c.conrelid")} AS columns,
       {_NAMES.format(arr="c.confkey", rel="c.confrelid")} AS referenced_columns,
       c.confdeltype::text AS deltype, c.confupdtype::text AS updtype,
       c.confmatchtype::text AS matchtype, c.condeferrable, c.condeferred, c.convalidated,
       {{enforced}} AS enforced, {{delsetcols}} AS on_delete_columns,
       t.relkind = 'p' AS partitioned,
       {_INDEX} AS index,
       t.reltuples::float8 AS reltuples,
       pg_catalog.pg_get_constraintdef(c.oid) AS definition,
       pg_catalog.format('%I.%I', n.nspname, t.relname) AS sql_table,
       pg_catalog.quote_ident(c.conname) AS sql_constraint,
       {_QUOTED.format(arr="c.conkey", rel="c.conrelid")} AS sql_columns
FROM pg_catalog.pg_constraint c
JOIN pg_catalog.pg_class t ON t.oid = c.conrelid
JOIN pg_catalog.pg_namespace n ON n.oid = t.relnamespace
WHERE c.contype = 'f' AND c.confrelid = $1 AND c.conparentid = 0
ORDER BY n.nspname, t.relname, c.conname
"""  # noqa: S608 - assembled from the constant fragments above, no input


def foreign_keys_query(server_version_num: int) -> str:
    """The catalog query for this server (ON DELETE SET NULL (cols) is PG15+,
    NOT ENFORCED is PG18+)."""
    delsetcols = (
        _NAMES.format(arr="c.confdelsetcols", rel="c.conrelid")
        if server_version_num >= 150000
        else "NULL::text[]"
    )
    enforced = "c.conenforced" if server_version_num >= 180000 else "true"
    return _FOREIGN_KEYS.format(delsetcols=delsetcols, enforced=enforced)


async def resolve_table(conn: asyncpg.Connection, name: str) -> tuple[str, str, str, int]:
    """(schema, table, sql_name, oid) of `name`; unqualified names mean schema public."""
    try:
        parts: list[str] = await conn.fetchval("SELECT pg_catalog.parse_ident($1)", name)
    except asyncpg.PostgresError as exc:
        raise AuditError(f"--referenced-table {name!r} is not a valid table name") from exc
    if len(parts) == 1:
        parts = ["public", parts[0]]
    if len(parts) != 2:
        raise AuditError(f"--referenced-table {name!r}: expected TABLE or SCHEMA.TABLE")
    row = await conn.fetchrow(_RESOLVE, parts[0], parts[1])
    shown = ".".join(parts)
    if row is None:
        raise AuditError(f"table {shown} does not exist in this database")
    if row["relkind"] not in ("r", "p"):
        raise AuditError(f"{shown} is not a table (foreign keys can only reference tables)")
    return str(row["nspname"]), str(row["relname"]), str(row["sql_name"]), int(row["oid"])


def _foreign_key(row: asyncpg.Record) -> ForeignKey:
    reltuples = float(row["reltuples"])
    delset = row["on_delete_columns"]
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
        sql_table=row["sql_table"],
        sql_constraint=row["sql_constraint"],
        sql_columns=tuple(row["sql_columns"]),
    )


async def audit_connection(
    conn: asyncpg.Connection, referenced_table: str = "users"
) -> AuditResult:
    """Run the audit on an open connection. Sets the session's search_path to ''."""
    await conn.execute("SELECT pg_catalog.set_config('search_path', '', false)")
    schema, table, sql_name, oid = await resolve_table(conn, referenced_table)
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
        foreign_keys=tuple(_foreign_key(row) for row in rows),
    )


async def connect(database_url: str, connect_timeout: float = 10.0) -> asyncpg.Connection:
    """Open one connection; AuditError (without the URL, which may hold a password)."""
    try:
        return await asyncpg.connect(database_url, timeout=connect_timeout)
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise AuditError(f"cannot connect to the database: {type(exc).__name__}: {exc}") from exc


async def audit(database_url: str, referenced_table: str = "users") -> AuditResult:
    conn = await connect(database_url)
    try:
        return await audit_connection(conn, referenced_table)
    finally:
        await conn.close()
