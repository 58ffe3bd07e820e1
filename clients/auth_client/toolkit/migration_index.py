"""The index migrations `fk-audit --emit-migration` writes before dropping the
foreign keys, and the SQL quoting they need.

Without the foreign key, a deleted user's rows are found by the referencing columns
(the `user_deleted` consumer, `auth-toolkit reconcile`), so those columns need an
index. `CREATE INDEX CONCURRENTLY` does not block writes but cannot run in a
transaction; dbmate sends a migration as one string and PostgreSQL runs a
multi-statement string as one implicit transaction, so each index gets a file of
its own holding exactly one statement (measured with dbmate 2.37: a second
statement makes the build fail).
"""

from __future__ import annotations

import hashlib
import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import datetime as dt

    from auth_client.toolkit.audit import AuditResult, ForeignKey

_MAX_IDENTIFIER_BYTES = 63  # NAMEDATALEN - 1


def quote_ident(name: str) -> str:
    """Always-quoted SQL identifier (used for index names this module invents)."""
    return '"' + name.replace('"', '""') + '"'


def quote_literal(text: str) -> str:
    """A SQL string literal, correct whatever standard_conforming_strings is."""
    body = text.replace("'", "''")
    if "\\" in body:
        return "E'" + body.replace("\\", "\\\\") + "'"
    return "'" + body + "'"


def slug(text: str, limit: int = 40) -> str:
    slug = re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")
    return slug[:limit].strip("_") or "x"


def _truncate_bytes(text: str, limit: int) -> str:
    encoded = text.encode()
    if len(encoded) <= limit:
        return text
    return encoded[:limit].decode(errors="ignore")


def index_name(fk: ForeignKey, taken: set[tuple[str, str]]) -> str:
    """`<table>_<cols>_idx`, shortened with a hash when too long, never a name in use
    in the table's schema (indexes share the namespace of tables)."""
    base = f"{fk.table}_{'_'.join(fk.columns)}_idx"
    candidate = base
    attempt = 0
    while len(candidate.encode()) > _MAX_IDENTIFIER_BYTES or (fk.schema, candidate) in taken:
        digest = hashlib.sha256(f"{base}:{attempt}".encode()).hexdigest()[:8]
        candidate = _truncate_bytes(f"{fk.table}_{'_'.join(fk.columns)}", 50) + f"_{digest}_idx"
        attempt += 1
    taken.add((fk.schema, candidate))
    return candidate


def render_index_file(
    result: AuditResult, fk: ForeignKey, name: str, drop_file: str, generated_at: dt.datetime
) -> str:
    columns = ", ".join(fk.sql_columns)
    qualified = f"{quote_ident(fk.schema)}.{quote_ident(name)}"
    lines = [
        *header(result, generated_at),
        "--",
        f"-- Index on {fk.sql_table} ({columns}),",
        f"-- the columns of foreign key {fk.sql_constraint} to {result.sql_referenced_table},",
        f"-- which {drop_file} drops. Without the constraint, a deleted",
        "-- user's rows are found by these columns (user_deleted consumer, `auth-toolkit",
        "-- reconcile`); without an index every such lookup reads the whole table.",
        "--",
    ]
    if fk.partitioned:
        lines += [
            "-- The table is partitioned, and PostgreSQL cannot build an index on a partitioned",
            "-- table CONCURRENTLY: this CREATE INDEX blocks writes to the table while it runs.",
            "-- For a large table, build it by hand under the same name first (CREATE INDEX ON",
            "-- ONLY the parent, CREATE INDEX CONCURRENTLY on each partition, ALTER INDEX ...",
            "-- ATTACH PARTITION); IF NOT EXISTS then makes this migration a no-op.",
            "",
            "-- migrate:up transaction:false",
            f"CREATE INDEX IF NOT EXISTS {quote_ident(name)} ON {fk.sql_table} ({columns});",
            "",
            "-- migrate:down transaction:false",
            f"DROP INDEX IF EXISTS {qualified};",
        ]
        return "\n".join(lines) + "\n"
    lines += [
        "-- CREATE INDEX CONCURRENTLY does not block reads or writes. It cannot run inside a",
        "-- transaction, and dbmate sends a migration as one string, which PostgreSQL runs as",
        "-- one implicit transaction when it holds several statements: so this file runs",
        "-- with transaction:false and holds exactly one statement.",
        "-- If the build fails (cancelled, deadlock, ...), PostgreSQL leaves an INVALID index",
        "-- behind and dbmate does not record this migration. IF NOT EXISTS is deliberately",
        "-- not used: it would keep the invalid index and report success. The next run fails",
        '-- with "already exists" instead; drop the leftover and run dbmate migrate again:',
        f"--   DROP INDEX CONCURRENTLY IF EXISTS {qualified};",
        "",
        "-- migrate:up transaction:false",
        f"CREATE INDEX CONCURRENTLY {quote_ident(name)} ON {fk.sql_table} ({columns});",
        "",
        "-- migrate:down transaction:false",
        f"DROP INDEX CONCURRENTLY IF EXISTS {qualified};",
    ]
    return "\n".join(lines) + "\n"


def header(result: AuditResult, generated_at: dt.datetime) -> list[str]:
    return [
        (
            "-- Generated by `auth-toolkit fk-audit --emit-migration`"
            f" at {generated_at:%Y-%m-%dT%H:%M:%SZ}"
        ),
        f"-- from database {result.database} (PostgreSQL {result.server_version}).",
    ]
