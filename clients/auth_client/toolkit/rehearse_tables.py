"""What the rehearsal's load writes, per audited table, learned from the copy: the
columns a new row needs, sample rows to model new rows on, which columns must get
fresh values so a new row is no duplicate, and the users it may reference.

A new row is a sample row of the table with:
- the columns of each foreign key to the users table set from one users row
  (an active user, or an id auth-service never issued);
- one column of each unique key that is in no foreign key set to a fresh value
  (integers count up from the column's maximum, uuids are random, text is
  `rehearsal-N`); a key with no such column may collide, which the load counts as
  a conflict, not a failure;
- identity, serial and generated columns left to PostgreSQL.
Every value travels as text and is cast to the column's type, so any column type
works. An empty table gives nothing to model rows on: it is read but not written.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from auth_client.toolkit.reconcile_model import IdState
from auth_client.toolkit.rehearse_report import RehearsalError

if TYPE_CHECKING:
    import asyncpg

    from auth_client.toolkit.audit import AuditResult, ForeignKey
    from auth_client.toolkit.reconcile_checker import UserStates

__all__ = ["TableModel", "UserPool", "load_tables", "load_users"]

SAMPLE_ROWS = 200
SAMPLE_USERS = 1000
_INTEGER = {"smallint", "integer", "bigint", "numeric"}
_TEXT = {"text", "character varying"}

_COLUMNS = """
SELECT a.attname::text AS name, pg_catalog.quote_ident(a.attname) AS sql,
       pg_catalog.format_type(a.atttypid, a.atttypmod) AS type,
       pg_catalog.format_type(a.atttypid, NULL) AS base_type,
       a.attidentity::text AS identity, a.attgenerated::text AS generated
FROM pg_catalog.pg_attribute a
WHERE a.attrelid = $1::pg_catalog.regclass AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum
"""
_UNIQUE_KEYS = """
SELECT ARRAY(SELECT a.attname::text FROM pg_catalog.unnest(i.indkey::int2[]) k(num)
             JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.num)
FROM pg_catalog.pg_index i WHERE i.indrelid = $1::pg_catalog.regclass AND i.indisunique
"""
_FK_COLUMNS = """
SELECT DISTINCT a.attname::text FROM pg_catalog.pg_constraint c
CROSS JOIN pg_catalog.unnest(c.conkey) k(num)
JOIN pg_catalog.pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.num
WHERE c.conrelid = $1::pg_catalog.regclass AND c.contype = 'f'
"""


@dataclass(frozen=True, slots=True)
class UserRef:
    """One foreign key of the table to the users table."""

    constraint: str
    columns: tuple[str, ...]  # raw names, in key order
    referenced: tuple[str, ...]  # the users columns they take their values from
    key: str | None  # the column holding the user id (None: the key does not hold it)


@dataclass
class TableModel:
    """One audited table as the load writes it."""

    sql_table: str
    refs: list[UserRef]
    columns: list[tuple[str, str, str]]  # (name, sql name, type) written by an INSERT
    fresh: dict[str, str]  # column -> int, uuid or text
    counters: dict[str, int]
    templates: list[list[str | None]] = field(default_factory=list)

    @property
    def constraints(self) -> set[str]:
        return {r.constraint for r in self.refs}

    def next_value(self, column: str) -> str:
        kind = self.fresh[column]
        if kind == "uuid":
            return str(uuid.uuid4())
        self.counters[column] += 1
        value = self.counters[column]
        return str(value) if kind == "int" else f"rehearsal-{value}"


@dataclass
class UserPool:
    """Users rows the load references: `active` ones (auth-service says so) and ids
    auth-service never issued (`unknown`, fixed per run, so their rows can be
    counted exactly afterwards)."""

    key: str  # the users column holding the user id
    active: list[dict[str, str]]
    unknown: list[str]


async def _key_column(conn: asyncpg.Connection, users: str) -> str:
    rows = await conn.fetch(
        "SELECT a.attname::text FROM pg_catalog.pg_index i"
        " CROSS JOIN pg_catalog.unnest(i.indkey::int2[]) k(num)"
        " JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.num"
        " WHERE i.indrelid = $1::pg_catalog.regclass AND i.indisprimary",
        users,
    )
    if len(rows) != 1:
        raise RehearsalError(
            f"{users} has no single-column primary key: the rehearsal needs the user id column"
        )
    return str(rows[0][0])


async def load_users(
    conn: asyncpg.Connection, result: AuditResult, states: UserStates, unknown: int = 16
) -> UserPool:
    """A sample of the users table, checked with auth-service; RehearsalError when
    none of it is active there (a wrong --target makes every user unknown)."""
    users = result.sql_referenced_table
    key = await _key_column(conn, users)
    referenced = sorted({c for fk in result.foreign_keys for c in fk.referenced_columns} | {key})
    select = ", ".join(f"{_ident(c)}::text" for c in referenced)
    rows = await conn.fetch(
        f"SELECT {select} FROM {users} ORDER BY random() LIMIT {SAMPLE_USERS}"  # noqa: S608
    )
    sample = [dict(zip(referenced, row, strict=True)) for row in rows]
    sample = [r for r in sample if r[key] is not None and _is_uuid(r[key])]
    answers = await states.states([r[key] for r in sample]) if sample else []
    active = [r for r, a in zip(sample, answers, strict=True) if a is IdState.ACTIVE]
    if not active:
        raise RehearsalError(
            f"none of the {len(sample)} users sampled from {users} is active in auth-service:"
            " is --target the right auth-service? The load writes rows for active users"
        )
    return UserPool(key, active, [str(uuid.uuid4()) for _ in range(unknown)])


def _is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _fresh_column(
    key: list[str], in_fk: set[str], types: dict[str, str], defaulted: set[str]
) -> tuple[str, str] | None:
    if defaulted.intersection(key):
        return None  # PostgreSQL fills one of its columns
    for column in key:
        kind = types.get(column)
        if column in in_fk or kind is None:
            continue
        if kind in _INTEGER:
            return column, "int"
        if kind == "uuid":
            return column, "uuid"
        if kind in _TEXT:
            return column, "text"
    return None


async def _model(
    conn: asyncpg.Connection, table: str, fks: list[ForeignKey], key: str
) -> TableModel:
    cols = await conn.fetch(_COLUMNS, table)
    defaulted = {c["name"] for c in cols if c["identity"] or c["generated"]}
    serial = await conn.fetch(
        "SELECT a.attname::text FROM pg_catalog.pg_attribute a"
        " JOIN pg_catalog.pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum"
        " WHERE a.attrelid = $1::pg_catalog.regclass"
        " AND pg_catalog.pg_get_expr(d.adbin, d.adrelid) LIKE 'nextval(%'",
        table,
    )
    defaulted |= {r[0] for r in serial}
    written = [(c["name"], c["sql"], c["type"]) for c in cols if c["name"] not in defaulted]
    types = {c["name"]: c["base_type"] for c in cols}
    in_fk = {r[0] for r in await conn.fetch(_FK_COLUMNS, table)}
    fresh: dict[str, str] = {}
    for (unique_key,) in await conn.fetch(_UNIQUE_KEYS, table):
        chosen = _fresh_column(list(unique_key), in_fk, types, defaulted)
        if chosen is not None:
            fresh[chosen[0]] = chosen[1]
    counters = {}
    for column, kind in fresh.items():
        if kind == "int":
            top = await conn.fetchval(f"SELECT max({_ident(column)}) FROM {table}")  # noqa: S608
            counters[column] = int(top or 0)
        elif kind == "text":
            counters[column] = 0
    refs = [
        UserRef(
            fk.constraint,
            fk.columns,
            fk.referenced_columns,
            next(
                (c for c, r in zip(fk.columns, fk.referenced_columns, strict=True) if r == key),
                None,
            ),
        )
        for fk in fks
    ]
    model = TableModel(table, refs, written, fresh, counters)
    select = ", ".join(f"{sql}::text" for _, sql, _ in written)
    rows = await conn.fetch(
        f"SELECT {select} FROM {table} ORDER BY random() LIMIT {SAMPLE_ROWS}"  # noqa: S608
    )
    model.templates = [list(row) for row in rows]
    return model


async def load_tables(conn: asyncpg.Connection, result: AuditResult, key: str) -> list[TableModel]:
    """A model of every referencing table of the audit, in the audit's order."""
    by_table: dict[str, list[ForeignKey]] = {}
    for fk in result.foreign_keys:
        by_table.setdefault(fk.sql_table, []).append(fk)
    return [await _model(conn, table, fks, key) for table, fks in by_table.items()]
