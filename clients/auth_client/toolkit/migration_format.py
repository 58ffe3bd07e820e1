"""The migration tools the emitted files are written for (`--migration-format`).

Each tool sends one file to PostgreSQL as one string; the emitted SQL is the same
for all (see `migration_sql`), only file names and markers differ:

| format | files | outside the tool's transaction |
|---|---|---|
| `dbmate` | `<version>_<name>.sql` with `-- migrate:up` / `-- migrate:down` | `transaction:false` on both markers |
| `sqlx` | `<version>_<name>.up.sql` / `.down.sql` (reversible) | the file's first bytes are `-- no-transaction` |
| `golang-migrate` | `<version>_<name>.up.sql` / `.down.sql` | always (it opens no transaction unless `x-use-transaction=true`, which these files must not run with) |

Versions are `YYYYMMDDHHMMSS`: a valid version for all three (sqlx: an i64,
golang-migrate: a uint), in apply order.
"""

from __future__ import annotations

from dataclasses import dataclass

FORMATS = ("dbmate", "sqlx", "golang-migrate")
SQLX_NO_TRANSACTION = "-- no-transaction"


@dataclass(frozen=True, slots=True)
class MigrationFile:
    name: str
    text: str


@dataclass(frozen=True, slots=True)
class Migration:
    """One migration (an up and a down), run outside the tool's transaction."""

    version: str
    name: str
    header: list[str]
    up: list[str]
    down: list[str]


def _text(lines: list[str]) -> str:
    return "\n".join(lines) + "\n"


def render(fmt: str, migration: Migration) -> list[MigrationFile]:
    """The file(s) `migration` is written as in format `fmt`."""
    stem = f"{migration.version}_{migration.name}"
    if fmt == "dbmate":
        body = [
            *migration.header,
            "",
            "-- migrate:up transaction:false",
            *migration.up,
            "",
            "-- migrate:down transaction:false",
            *migration.down,
        ]
        return [MigrationFile(f"{stem}.sql", _text(body))]
    if fmt not in FORMATS:
        raise ValueError(f"--migration-format must be one of {', '.join(FORMATS)}")
    # sqlx reads the marker only at the very start of the file.
    marker = [SQLX_NO_TRANSACTION] if fmt == "sqlx" else []
    return [
        MigrationFile(f"{stem}.up.sql", _text([*marker, *migration.header, "", *migration.up])),
        MigrationFile(f"{stem}.down.sql", _text([*marker, *migration.header, "", *migration.down])),
    ]


def version_of(file_name: str) -> str:
    """The version part of a migration file name (any of the formats)."""
    return file_name.split("_", 1)[0]
