"""`fk-audit --emit-migration DIR`: dbmate migrations that drop the audited foreign keys.

What is written, and why it is split that way:

- One `<version>_index_<table>_<columns>.sql` per referencing column set that has no
  covering index, applied first (see `fk_migration_index`).
- One `<version>_drop_user_fks.sql` (the last version) that drops the constraints,
  each in its own short transaction, and whose down restores them exactly
  (`pg_get_constraintdef()`), `NOT VALID` first and `VALIDATE CONSTRAINT` after,
  each step committed separately so no write lock is held during validation.

A single `dbmate rollback` therefore restores every constraint; the indexes stay
(they are useful with or without the constraints) until rolled back one by one.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING

from auth_client.toolkit.migration_index import (
    header,
    index_name,
    quote_literal,
    render_index_file,
    slug,
)

if TYPE_CHECKING:
    from pathlib import Path

    import asyncpg

    from auth_client.toolkit.audit import AuditResult, ForeignKey

LOCK_TIMEOUT = "5s"
_VERSION_FORMAT = "%Y%m%d%H%M%S"


@dataclass(frozen=True, slots=True)
class MigrationFile:
    name: str
    text: str


def _dollar_tag(body: str) -> str:
    tag, n = "$fk$", 0
    while tag in body:
        n += 1
        tag = f"$fk{n}$"
    return tag


def _restore_statements(fk: ForeignKey) -> list[str]:
    """Add the constraint back NOT VALID (unless it was not valid or not enforced to
    begin with; pg_get_constraintdef() then already says so), then validate it."""
    needs_validation = fk.validated and fk.enforced
    definition = fk.definition + (" NOT VALID" if needs_validation else "")
    add = f"ALTER TABLE {fk.sql_table} ADD CONSTRAINT {fk.sql_constraint} {definition};"
    exists = (
        "SELECT FROM pg_catalog.pg_constraint WHERE conrelid = "
        f"{quote_literal(fk.sql_table)}::pg_catalog.regclass"
        f" AND conname = {quote_literal(fk.constraint)}"
    )
    block = [f"BEGIN IF NOT EXISTS ({exists}) THEN", f"  {add}", "END IF; END"]
    tag = _dollar_tag("\n".join(block))
    block[0] = f"DO {tag}\n{block[0]}"
    block[-1] += f" {tag};"
    out = [
        f"-- {fk.sql_table} ({', '.join(fk.sql_columns)}) {fk.sql_constraint}",
        "BEGIN;",
        f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}';",
        *block,
        "COMMIT;",
    ]
    if needs_validation:
        out += [
            "BEGIN;",
            f"ALTER TABLE {fk.sql_table} VALIDATE CONSTRAINT {fk.sql_constraint};",
            "COMMIT;",
        ]
    return out


def render_drop_file(result: AuditResult, index_files: list[str], generated_at: dt.datetime) -> str:
    fks = result.foreign_keys
    lines = [
        *header(result, generated_at),
        "--",
        f"-- Drops the {len(fks)} foreign key(s) that reference {result.sql_referenced_table}.",
        "-- Services check user ids with auth-service instead (auth_client in ENFORCE mode),",
        "-- remove a deleted user's rows on the user_deleted event, and run",
        "-- `auth-toolkit reconcile` to catch what slipped through. See",
        "-- docs/fk-removal-playbook.md.",
        "--",
    ]
    if index_files:
        lines += ["-- The indexes the referencing columns lack are built first, by:"]
        lines += [f"--   {name}" for name in index_files]
        lines += ["--"]
    lines += [
        "-- up (transaction:false): each constraint is dropped in its own transaction.",
        "-- Dropping a foreign key locks the referencing table and the users table for an",
        "-- instant, but a lock request waiting behind a long query makes every later query",
        f"-- wait too; lock_timeout = {LOCK_TIMEOUT} makes a busy table fail fast instead. Run the",
        "-- migration again after a failure: DROP CONSTRAINT IF EXISTS skips what is gone.",
        "--",
        "-- down (transaction:false): restores every constraint exactly as",
        "-- pg_get_constraintdef() printed it at audit time (name, columns, referenced",
        "-- columns, MATCH, ON DELETE / ON UPDATE, deferrability). Each is added NOT VALID",
        "-- (a short lock; existing rows are not checked) and committed, then validated in a",
        "-- transaction of its own: VALIDATE CONSTRAINT reads the whole table but holds only",
        "-- a SHARE UPDATE EXCLUSIVE lock, which does not block reads or writes. Adding it",
        "-- valid in one step would block writes to the table for the whole scan.",
        "-- If rows now reference users missing from the referenced table, VALIDATE fails:",
        "-- that constraint stays NOT VALID (it still checks new writes), dbmate keeps this",
        "-- migration applied, and running the rollback again after fixing the rows",
        "-- (`auth-toolkit reconcile --action ...`) finishes it; constraints that already",
        "-- exist are skipped.",
        "",
        "-- migrate:up transaction:false",
    ]
    for fk in fks:
        lines += [
            f"-- {fk.sql_table} ({', '.join(fk.sql_columns)}) ON DELETE {fk.on_delete_text}",
            "BEGIN;",
            f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}';",
            f"ALTER TABLE {fk.sql_table} DROP CONSTRAINT IF EXISTS {fk.sql_constraint};",
            "COMMIT;",
        ]
    lines += ["", "-- migrate:down transaction:false"]
    for fk in fks:
        lines += _restore_statements(fk)
    return "\n".join(lines) + "\n"


def _drop_fileslug(result: AuditResult) -> str:
    if (result.referenced_schema, result.referenced_table) == ("public", "users"):
        return "drop_user_fks"
    return f"drop_fks_to_{slug(result.referenced_schema + '_' + result.referenced_table)}"


def plan_files(
    result: AuditResult,
    *,
    now: dt.datetime,
    taken: set[tuple[str, str]],
    existing_versions: set[str],
) -> list[MigrationFile]:
    """Every file to write, in the order dbmate must apply them."""
    if not result.foreign_keys:
        return []
    now = now.astimezone(dt.UTC)
    start = now.replace(microsecond=0)
    for version in existing_versions:  # dbmate applies versions in order: come after them
        if version.isdigit() and len(version) == 14:
            previous = dt.datetime.strptime(version, _VERSION_FORMAT).replace(tzinfo=dt.UTC)
            start = max(start, previous + dt.timedelta(seconds=1))
    needs_index: list[ForeignKey] = []
    seen: set[tuple[str, str, frozenset[str]]] = set()
    for fk in result.missing_indexes:
        key = (fk.schema, fk.table, frozenset(fk.columns))
        if key not in seen:
            seen.add(key)
            needs_index.append(fk)
    versions = [
        (start + dt.timedelta(seconds=i)).strftime(_VERSION_FORMAT)
        for i in range(len(needs_index) + 1)
    ]
    drop_name = f"{versions[-1]}_{_drop_fileslug(result)}.sql"
    files: list[MigrationFile] = []
    for version, fk in zip(versions, needs_index, strict=False):
        name = index_name(fk, taken)
        file_name = (
            f"{version}_index_{slug(fk.schema + '_' + fk.table + '_' + '_'.join(fk.columns))}.sql"
        )
        files.append(MigrationFile(file_name, render_index_file(result, fk, name, drop_name, now)))
    files.append(MigrationFile(drop_name, render_drop_file(result, [f.name for f in files], now)))
    return files


async def taken_relation_names(conn: asyncpg.Connection, schemas: set[str]) -> set[tuple[str, str]]:
    rows = await conn.fetch(
        "SELECT n.nspname::text, c.relname::text FROM pg_catalog.pg_class c"
        " JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = ANY($1::text[])",
        sorted(schemas),
    )
    return {(row[0], row[1]) for row in rows}


def write_files(directory: Path, files: list[MigrationFile]) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for item in files:
        path = directory / item.name
        with path.open("x", encoding="utf-8") as handle:  # never overwrite a migration
            handle.write(item.text)
        written.append(path)
    return written


def existing_versions(directory: Path) -> set[str]:
    if not directory.is_dir():
        return set()
    return {p.name.split("_", 1)[0] for p in directory.glob("*.sql")}


async def emit(
    conn: asyncpg.Connection, result: AuditResult, directory: Path, now: dt.datetime | None = None
) -> list[Path]:
    """Plan and write the migration files for `result`; returns the paths written."""
    taken = await taken_relation_names(conn, {fk.schema for fk in result.foreign_keys})
    stamp = now or dt.datetime.now(dt.UTC)
    return write_files(
        directory,
        plan_files(result, now=stamp, taken=taken, existing_versions=existing_versions(directory)),
    )
