"""`auth-service migrate`: apply pending migrations with dbmate.

Migrations live in `migrations/` (dbmate format) and ship inside the wheel as
`auth_service/_migrations`. dbmate records applied versions in `schema_migrations`,
so running it twice is a no-op, and `--migration-lock` lets several replicas run it
at once safely.
"""

from __future__ import annotations

from pathlib import Path

from auth_client.toolkit.dbmate import DbmateError, run_dbmate

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
