"""`fk-audit --emit-migration DIR`: migrations that drop the audited foreign keys.

What is written, in apply order, for the audit's scope (`--schema`,
`--exclude-table`) and format (`--migration-format`, see `migration_format`):

- one index migration per referencing column set without a covering index
  (`migration_index`); with `--indexes-only`, nothing else;
- one `<version>_drop_user_fks[_<schemas>]` migration (the last version) that drops
  the constraints, each in its own short transaction with `lock_timeout` and a
  bounded retry (`--lock-timeout`, `--lock-retries`), and whose down restores them
  exactly (`pg_get_constraintdef()`): every one added `NOT VALID` first, then each
  validated, a failure never stopping half-way (`migration_sql`);
- `auth-toolkit-fks-<version>.json`, the inventory of the dropped constraints, which
  `fk-audit --check-restore DIR` reads to count, before a rollback, the rows that
  would fail validation (`restore_check`). No migration tool reads it.

Every file names the tables it touches in a `-- Tables:` line.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from auth_client.toolkit.migration_format import Migration, MigrationFile, render, version_of
from auth_client.toolkit.migration_index import header, index_migration, index_name, slug
from auth_client.toolkit.migration_sql import LockPolicy, drop_statements, restore_statements
from auth_client.toolkit.restore_check import inventory_file

if TYPE_CHECKING:
    from pathlib import Path

    import asyncpg

    from auth_client.toolkit.audit import AuditResult, ForeignKey

_VERSION_FORMAT = "%Y%m%d%H%M%S"


@dataclass(frozen=True, slots=True)
class EmitOptions:
    """How `--emit-migration` writes: the tool's format, lock waits, indexes only."""

    fmt: str = "dbmate"
    lock: LockPolicy = field(default_factory=LockPolicy)
    indexes_only: bool = False


def drop_migration(
    result: AuditResult,
    version: str,
    index_files: list[str],
    options: EmitOptions,
    now: dt.datetime,
) -> Migration:
    fks = result.foreign_keys
    tables = sorted({fk.sql_table for fk in fks})
    lines = [
        *header(result, now),
        "--",
        f"-- Drops the {len(fks)} foreign key(s) to {result.sql_referenced_table} of these tables.",
        f"-- Tables: {', '.join(tables)}",
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
        "-- up: each constraint is dropped in its own transaction. Dropping a foreign key",
        "-- locks the referencing table and the users table for an instant, but a lock",
        "-- request waiting behind a long query makes every later query wait too; so each",
        f"-- waits at most ({options.lock.describe()}),",
        "-- then the migration fails naming the table. Run it again later: DROP CONSTRAINT",
        "-- IF EXISTS skips what is gone.",
        "--",
        "-- down: restores every constraint exactly as pg_get_constraintdef() printed it at",
        "-- audit time (name, columns, referenced columns, MATCH, ON DELETE / ON UPDATE,",
        "-- deferrability). Phase 1 adds each NOT VALID (a short lock; existing rows are not",
        "-- checked, new writes are) and commits. Phase 2 validates each in a transaction of",
        "-- its own: VALIDATE CONSTRAINT reads the whole table but holds only a SHARE UPDATE",
        "-- EXCLUSIVE lock, which does not block reads or writes. A validation that fails",
        "-- (rows reference users missing from the referenced table) does not stop the",
        "-- others; at the end the rollback fails naming each constraint left NOT VALID and",
        "-- how many rows violate it, so the tool keeps this migration applied. Fix the rows",
        "-- (`auth-toolkit reconcile --action ...`) and roll back again. Before rolling back,",
        "-- `auth-toolkit fk-audit --check-restore DIR` counts those rows.",
    ]
    up = [line for fk in fks for line in drop_statements(fk, options.lock)]
    down = restore_statements(fks, options.lock)
    name = "drop_user_fks"
    if (result.referenced_schema, result.referenced_table) != ("public", "users"):
        name = f"drop_fks_to_{slug(result.referenced_schema + '_' + result.referenced_table)}"
    if result.scope.label:
        name += f"_{slug(result.scope.label)}"
    return Migration(version, name, lines, up, down)


def _versions(now: dt.datetime, existing_versions: set[str], count: int) -> list[str]:
    start = now.astimezone(dt.UTC).replace(microsecond=0)
    for version in existing_versions:  # tools apply versions in order: come after them
        if version.isdigit() and len(version) == 14:
            previous = dt.datetime.strptime(version, _VERSION_FORMAT).replace(tzinfo=dt.UTC)
            start = max(start, previous + dt.timedelta(seconds=1))
    return [(start + dt.timedelta(seconds=i)).strftime(_VERSION_FORMAT) for i in range(count)]


def _needing_index(result: AuditResult) -> list[ForeignKey]:
    needs: list[ForeignKey] = []
    seen: set[tuple[str, str, frozenset[str]]] = set()
    for fk in result.missing_indexes:
        key = (fk.schema, fk.table, frozenset(fk.columns))
        if key not in seen:
            seen.add(key)
            needs.append(fk)
    return needs


def plan_files(
    result: AuditResult,
    *,
    now: dt.datetime,
    taken: set[tuple[str, str]],
    existing_versions: set[str],
    options: EmitOptions | None = None,
) -> list[MigrationFile]:
    """Every file to write, in the order the tool must apply them."""
    options = options or EmitOptions()
    if not result.foreign_keys:
        return []
    now = now.astimezone(dt.UTC)
    needs_index = _needing_index(result)
    if options.indexes_only and not needs_index:
        return []
    versions = _versions(now, existing_versions, len(needs_index) + 1)
    files: list[MigrationFile] = []
    for version, fk in zip(versions, needs_index, strict=False):
        migration = index_migration(result, fk, index_name(fk, taken), version, now)
        files += render(options.fmt, migration)
    if options.indexes_only:
        return files
    drop = drop_migration(result, versions[-1], [f.name for f in files], options, now)
    drop_files = render(options.fmt, drop)
    inventory = inventory_file(result, drop, [f.name for f in drop_files], options.fmt)
    return [*files, *drop_files, inventory]


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
    return {version_of(p.name) for p in directory.glob("*.sql")}


async def emit(
    conn: asyncpg.Connection,
    result: AuditResult,
    directory: Path,
    now: dt.datetime | None = None,
    options: EmitOptions | None = None,
) -> list[Path]:
    """Plan and write the migration files for `result`; returns the paths written."""
    taken = await taken_relation_names(conn, {fk.schema for fk in result.foreign_keys})
    stamp = now or dt.datetime.now(dt.UTC)
    planned = plan_files(
        result,
        now=stamp,
        taken=taken,
        existing_versions=existing_versions(directory),
        options=options,
    )
    return write_files(directory, planned)
