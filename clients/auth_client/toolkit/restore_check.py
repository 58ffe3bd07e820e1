"""`fk-audit --check-restore DIR`: before a rollback, count per dropped constraint
the rows that would fail `VALIDATE CONSTRAINT`.

The constraints come from the inventory `--emit-migration` writes beside the
migrations (`auth-toolkit-fks-<version>.json`: every audited field of each dropped
constraint, as `ForeignKey.to_record()`), not from the database, where they are
gone. DIR is the migrations directory (every inventory in it) or one inventory file.
The count is the query the emitted down migration runs when a validation fails
(`migration_sql.violation_count_sql`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from auth_client.toolkit.audit import AuditError, ForeignKey
from auth_client.toolkit.migration_format import MigrationFile
from auth_client.toolkit.migration_sql import violation_count_sql

if TYPE_CHECKING:
    import asyncpg

    from auth_client.toolkit.audit import AuditResult
    from auth_client.toolkit.migration_format import Migration

INVENTORY_PREFIX = "auth-toolkit-fks-"  # no '_': sqlx and golang-migrate ignore it


def inventory_file(
    result: AuditResult, drop: Migration, drop_files: list[str], fmt: str
) -> MigrationFile:
    data = {
        "inventory_version": 1,
        "migration_version": drop.version,
        "migration_files": drop_files,
        "migration_format": fmt,
        "database": result.database,
        "referenced_table": result.sql_referenced_table,
        "scope": result.to_json()["scope"],
        "foreign_keys": [fk.to_record() for fk in result.foreign_keys],
    }
    return MigrationFile(
        f"{INVENTORY_PREFIX}{drop.version}.json", json.dumps(data, indent=2) + "\n"
    )


def load_inventory(path: Path) -> tuple[ForeignKey, ...]:
    """The dropped constraints recorded in `path` (a file, or a directory of them)."""
    files = sorted(path.glob(f"{INVENTORY_PREFIX}*.json")) if path.is_dir() else [path]
    if not files:
        raise AuditError(
            f"no {INVENTORY_PREFIX}*.json inventory in {path} (--emit-migration writes it)"
        )
    fks: list[ForeignKey] = []
    for file in files:
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
            records = data["foreign_keys"] if data["inventory_version"] == 1 else None
            fks += [ForeignKey.from_record(item) for item in records or ()]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise AuditError(f"cannot read inventory {file}: {exc}") from exc
        if records is None:
            raise AuditError(f"{file} is not an inventory of this auth-toolkit version")
    return tuple(fks)


@dataclass(frozen=True, slots=True)
class RestoreCheck:
    """One dropped constraint: is it back, is it valid, how many rows violate it."""

    table: str
    constraint: str
    present: bool
    validated: bool
    violating_rows: int

    def to_json(self) -> dict[str, Any]:
        return {
            "table": self.table,
            "constraint": self.constraint,
            "present": self.present,
            "validated": self.validated,
            "violating_rows": self.violating_rows,
        }


async def check_restore(
    conn: asyncpg.Connection, fks: tuple[ForeignKey, ...]
) -> list[RestoreCheck]:
    await conn.execute("SELECT pg_catalog.set_config('search_path', '', false)")
    checks = []
    for fk in fks:
        state = await conn.fetchrow(
            "SELECT convalidated FROM pg_catalog.pg_constraint"
            " WHERE conrelid = pg_catalog.to_regclass($1) AND conname = $2",
            fk.sql_table,
            fk.constraint,
        )
        try:
            count = int(await conn.fetchval(violation_count_sql(fk)))
        except Exception as exc:  # a table or column gone since the audit
            raise AuditError(f"cannot check {fk.constraint} on {fk.sql_table}: {exc}") from exc
        checks.append(
            RestoreCheck(
                fk.sql_table,
                fk.constraint,
                present=state is not None,
                validated=bool(state and state["convalidated"]),
                violating_rows=count if fk.validated and fk.enforced else 0,
            )
        )
    return checks


def render(checks: list[RestoreCheck], output_format: str) -> str:
    bad = [c for c in checks if c.violating_rows]
    if output_format == "json":
        return json.dumps(
            {"restorable": not bad, "constraints": [c.to_json() for c in checks]}, indent=2
        )
    lines = [
        f"{len(checks)} dropped constraint(s); "
        + (f"{len(bad)} would fail validation on rollback" if bad else "all would validate")
    ]
    lines += [
        f"  {c.table} {c.constraint}: {c.violating_rows} violating row(s)"
        + (" (present now)" if c.present else "")
        for c in checks
    ]
    return "\n".join(lines)
