"""`auth-service migrate`: apply pending migrations with dbmate.

Migrations live in `migrations/` (dbmate format) and ship inside the wheel as
`auth_service/_migrations`. dbmate records applied versions in `schema_migrations`,
so running it twice is a no-op, and `--migration-lock` lets several replicas run it
at once safely.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import asyncpg

from auth_client.toolkit.dbmate import DbmateError, run_dbmate

if TYPE_CHECKING:
    from auth_service.store.pool import Conn

_PACKAGE_DIR = Path(__file__).resolve().parent.parent


class MigrationError(RuntimeError):
    """Migrations could not be applied; the message says why in one line."""


def migrations_dir() -> Path:
    bundled = _PACKAGE_DIR / "_migrations"
    if bundled.is_dir():
        return bundled
    source_tree = _PACKAGE_DIR.parent / "migrations"
    if source_tree.is_dir():
        return source_tree
    raise MigrationError("no migrations directory found (broken installation?)")


def migrate(database_url: str, *, wait_s: float = 0) -> str:
    """Apply pending migrations; return dbmate's report. Raises MigrationError."""
    try:
        return run_dbmate(database_url, migrations_dir(), "migrate", wait_s=wait_s)
    except DbmateError as exc:
        raise MigrationError(f"migration failed: {exc}") from exc


def bundled_versions() -> list[str]:
    """The versions of the migrations this release ships (dbmate: the digits before
    the first `_` of each file name), in order."""
    return sorted(p.name.split("_", 1)[0] for p in migrations_dir().glob("*.sql"))


_APPLIED = "SELECT version FROM schema_migrations"


@dataclass(frozen=True, slots=True)
class SchemaCheck:
    """How the database's applied migrations compare with this release's."""

    pending: tuple[str, ...]  # this release's migrations the database lacks
    unknown: tuple[str, ...]  # applied migrations this release does not know (newer)
    latest_applied: str | None

    @property
    def problem(self) -> str | None:
        """One line saying why this release cannot serve the database, and the fix.

        A database *ahead* of this release is not a problem: during the documented
        rolling upgrade (migrate first, then roll the servers) the old servers run
        on the new schema, which every migration keeps working for them."""
        if not self.pending:
            return None
        have = f"latest applied {self.latest_applied}" if self.latest_applied else "no migrations"
        return (
            f"the database schema is behind this release ({have}; {len(self.pending)}"
            f" pending, up to {self.pending[-1]}): run `auth-service migrate`"
        )


async def check_schema(conn: Conn, needed: Sequence[str]) -> SchemaCheck:
    """Compare `schema_migrations` (dbmate's table) with `needed`."""
    try:
        applied = {str(row[0]) for row in await conn.fetch(_APPLIED)}
    except asyncpg.UndefinedTableError:
        applied = set()
    known = set(needed)
    return SchemaCheck(
        pending=tuple(v for v in needed if v not in applied),
        unknown=tuple(sorted(applied - known)),
        latest_applied=max(applied) if applied else None,
    )
