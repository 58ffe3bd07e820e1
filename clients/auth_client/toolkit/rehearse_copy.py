"""The scratch copy `auth-toolkit rehearse` works on, and the only writes it makes
outside that copy: `CREATE DATABASE` / `DROP DATABASE` of the copy itself.

`CREATE DATABASE ... TEMPLATE` cannot copy a database others are connected to, so
the copy is `pg_dump --format=custom | pg_restore` into a new database on the same
server: pg_dump reads one consistent snapshot while the service keeps writing
(it takes ACCESS SHARE locks, which block no reads or writes). Nothing is written
to the source: every session opened on it is read only
(`default_transaction_read_only`), and pg_dump only reads. The copy is owned by
the connecting role (`--no-owner --no-acl`), carries no subscriptions or
publications, and is dropped at the end unless kept (`--keep`).

Refused, in one line each: a role that may not create databases, pg_dump older
than the server (see `pg_tools`), a restore error (the partial copy is dropped).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import time
from typing import TYPE_CHECKING, Self

import asyncpg

from auth_client.toolkit.rehearse_report import RehearsalError
from auth_client.toolkit.urls import split_password, with_database

if TYPE_CHECKING:
    from types import TracebackType

    from auth_client.toolkit.pg_tools import PgTools

__all__ = ["APP", "ScratchCopy", "connect", "constraint_snapshot", "schema_snapshot"]

APP = "auth-toolkit rehearse"

# Every constraint and index outside the system schemas, names schema-qualified
# (the session's search_path is empty).
_CONSTRAINTS = """
SELECT 'constraint', c.conrelid::pg_catalog.regclass::text, c.conname::text,
       pg_catalog.pg_get_constraintdef(c.oid), c.convalidated::text
FROM pg_catalog.pg_constraint c JOIN pg_catalog.pg_namespace n ON n.oid = c.connamespace
WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%'
"""
_INDEXES = """
SELECT 'index', i.indrelid::pg_catalog.regclass::text, i.indexrelid::pg_catalog.regclass::text,
       pg_catalog.pg_get_indexdef(i.indexrelid), i.indisvalid::text
FROM pg_catalog.pg_index i JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%'
"""

Snapshot = frozenset[tuple[str, ...]]


async def connect(url: str, role: str, *, read_only: bool = False) -> asyncpg.Connection:
    """One session named `auth-toolkit rehearse (<role>)`; read only when asked."""
    settings = {"application_name": f"{APP} ({role})", "search_path": ""}
    if read_only:
        settings["default_transaction_read_only"] = "on"
    try:
        return await asyncpg.connect(url, timeout=10, server_settings=settings)
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise RehearsalError(
            f"cannot connect to the database: {type(exc).__name__}: {exc}"
        ) from exc


async def schema_snapshot(conn: asyncpg.Connection) -> Snapshot:
    """Every constraint and index with its definition and validity."""
    rows = await conn.fetch(_CONSTRAINTS + " UNION ALL " + _INDEXES)
    return frozenset(tuple(str(v) for v in row) for row in rows)


async def constraint_snapshot(conn: asyncpg.Connection) -> Snapshot:
    """Every constraint (partition copies included) with definition and validity."""
    return frozenset(tuple(str(v) for v in row) for row in await conn.fetch(_CONSTRAINTS))


def _scratch_name(source: str) -> str:
    suffix = f"_rehearsal_{secrets.token_hex(4)}"
    head = source.encode()[: 63 - len(suffix)].decode(errors="ignore")
    return head + suffix


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class ScratchCopy:
    """`async with ScratchCopy(url, tools) as copy:` a copy of the database of `url`
    on the same server, at `copy.url`; dropped by `aclose()` (idempotent) unless
    `keep`."""

    def __init__(self, source_url: str, tools: PgTools, *, keep: bool = False) -> None:
        self.source_url = source_url
        self.tools = tools
        self.keep = keep
        self.name = ""
        self.url = ""
        self.source_name = ""
        self.copy_ms = 0.0
        self._admin: asyncpg.Connection | None = None
        self._created = False

    async def __aenter__(self) -> Self:
        try:
            await self.start()
        except BaseException:
            await self.aclose()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def start(self) -> None:
        # The one session on the source that may write: CREATE / DROP DATABASE of
        # the copy (which writes the server's catalog, never the source database).
        self._admin = admin = await connect(self.source_url, "copy")
        row = await admin.fetchrow(
            "SELECT pg_catalog.current_database() AS db, current_user AS role,"
            " (SELECT rolcreatedb OR rolsuper FROM pg_catalog.pg_roles"
            "  WHERE rolname = current_user) AS may_create,"
            " pg_catalog.current_setting('server_version_num')::int AS version"
        )
        assert row is not None
        self.source_name = str(row["db"])
        if not row["may_create"]:
            raise RehearsalError(
                f"role {row['role']} may not create databases, and the rehearsal works on a"
                " copy: run it as a role with CREATEDB (ALTER ROLE ... CREATEDB) on this server"
            )
        self.tools.check_server(int(row["version"]))
        self.name = _scratch_name(self.source_name)
        self.url = with_database(self.source_url, self.name)
        await admin.execute(f"CREATE DATABASE {_quote(self.name)} TEMPLATE template0")
        self._created = True
        started = time.monotonic()
        await self._dump_restore()
        self.copy_ms = (time.monotonic() - started) * 1000

    def _env(self) -> tuple[str, str, dict[str, str]]:
        source, password = split_password(self.source_url)
        target, _ = split_password(self.url)
        env = dict(os.environ)
        if password is not None:
            env["PGPASSWORD"] = password
        return source, target, env

    async def _dump_restore(self) -> None:
        source, target, env = self._env()
        read, write = os.pipe()
        try:
            dump = await asyncio.create_subprocess_exec(
                self.tools.pg_dump, "--format=custom", "--no-owner", "--no-acl",
                "--no-subscriptions", "--no-publications", f"--dbname={source}",
                stdin=asyncio.subprocess.DEVNULL, stdout=write,
                stderr=asyncio.subprocess.PIPE, env=env,
            )  # fmt: skip
            restore = await asyncio.create_subprocess_exec(
                self.tools.pg_restore, "--no-owner", "--no-acl", "--exit-on-error",
                f"--dbname={target}",
                stdin=read, stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE, env=env,
            )  # fmt: skip
        finally:
            os.close(read)
            os.close(write)
        (_, dump_err), (_, restore_err) = await asyncio.gather(
            dump.communicate(), restore.communicate()
        )
        for proc, err, what in ((restore, restore_err, "pg_restore"), (dump, dump_err, "pg_dump")):
            if proc.returncode != 0:
                lines = [x for x in err.decode(errors="replace").splitlines() if x.strip()]
                why = lines[0] if lines else f"exited with {proc.returncode}"
                raise RehearsalError(f"copying the database failed: {what}: {why}")

    async def aclose(self) -> None:
        admin, self._admin = self._admin, None
        if admin is None:
            return
        try:
            if self._created and not self.keep:
                await self._drop(admin)
        finally:
            with contextlib.suppress(Exception):
                await admin.close()

    async def _drop(self, admin: asyncpg.Connection) -> None:
        self._created = False
        version = int(await admin.fetchval("SELECT current_setting('server_version_num')"))
        if version < 130000:  # no DROP DATABASE ... WITH (FORCE) before PostgreSQL 13
            await admin.execute(
                "SELECT pg_catalog.pg_terminate_backend(pid) FROM pg_catalog.pg_stat_activity"
                " WHERE datname = $1",
                self.name,
            )
            await admin.execute(f"DROP DATABASE IF EXISTS {_quote(self.name)}")
            return
        await admin.execute(f"DROP DATABASE IF EXISTS {_quote(self.name)} WITH (FORCE)")
