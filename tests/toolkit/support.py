"""Helpers for the downstream-migration toolkit tests: a downstream service database
modeled on the platform, catalog snapshots, dbmate and CLI runners."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
from pathlib import Path
from typing import Any

import asyncpg

from auth_client.toolkit.dbmate import dbmate_binary, dbmate_url

DOWNSTREAM_SQL = (Path(__file__).parent / "downstream.sql").read_text()
GHOST = "00000000-0000-4000-8000-000000000000"
ALICE = "11111111-1111-4111-8111-111111111111"
BOB = "22222222-2222-4222-8222-222222222222"


async def build_downstream(url: str) -> None:
    """Turn a fresh database into the downstream service database of downstream.sql,
    with some rows, one analyzed table and one INVALID index."""
    conn = await asyncpg.connect(url)
    try:
        # new_database() clones the auth database: this is another service's database.
        await conn.execute("DROP TABLE IF EXISTS public.schema_migrations; DROP TABLE public.users")
        await conn.execute(DOWNSTREAM_SQL)
        if await server_version(conn) >= 180000:
            await conn.execute(
                "ALTER TABLE content.posts ADD COLUMN editor_id uuid;"
                " ALTER TABLE content.posts ADD CONSTRAINT posts_editor_id_fkey"
                " FOREIGN KEY (editor_id) REFERENCES public.users NOT ENFORCED;"
                " CREATE INDEX posts_editor_id_idx ON content.posts (editor_id)"
            )
        await conn.execute(
            f"""
            INSERT INTO public.users (id, region, username) VALUES
                ('{GHOST}', 'eu', 'ghost'), ('{ALICE}', 'eu', 'alice'), ('{BOB}', 'us', 'bob');
            INSERT INTO messaging.conversations VALUES (1, '{ALICE}', 'hi');
            INSERT INTO messaging.conversation_participants VALUES (1, '{ALICE}'), (1, '{BOB}');
            INSERT INTO messaging.messages VALUES (1, 1, '{ALICE}', 'hello'), (2, 1, '{BOB}', NULL);
            INSERT INTO content.posts (id, author_id, body)
                SELECT g, CASE WHEN g % 2 = 0 THEN '{ALICE}'::uuid ELSE '{BOB}'::uuid END, 'p'
                FROM generate_series(1, 40) g;
            INSERT INTO content.post_shares VALUES (1, 1, 'us', '{BOB}');
            INSERT INTO streaming.streams VALUES (1, '{ALICE}'), (2, '{ALICE}');
            INSERT INTO streaming.viewer_sessions VALUES (1, 1, '{BOB}');
            INSERT INTO experiments.experiment_events VALUES (1, '2026-05-01', '{BOB}', 'us');
            ANALYZE content.posts;
            """
        )
        # A failed concurrent build leaves an INVALID index: it must not count as cover.
        with contextlib.suppress(asyncpg.UniqueViolationError):
            await conn.execute(
                "CREATE UNIQUE INDEX CONCURRENTLY streams_broadcaster_uq"
                " ON streaming.streams (broadcaster_id)"
            )
    finally:
        await conn.close()


async def server_version(conn: asyncpg.Connection) -> int:
    return int(await conn.fetchval("SELECT current_setting('server_version_num')"))


async def fk_snapshot(url: str) -> set[tuple[Any, ...]]:
    """Every foreign key in the database (partition copies included), as PostgreSQL
    prints it with every name schema-qualified."""
    conn = await asyncpg.connect(url, server_settings={"search_path": ""})
    try:
        rows = await conn.fetch(
            """
            SELECT conrelid::regclass::text, conname::text, pg_get_constraintdef(oid),
                   convalidated, condeferrable, condeferred, conparentid <> 0
            FROM pg_constraint WHERE contype = 'f'
            """
        )
    finally:
        await conn.close()
    return {tuple(row) for row in rows}


async def fetch(url: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetch(sql, *args)
    finally:
        await conn.close()


async def execute(url: str, sql: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def dbmate(url: str, migrations_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The real dbmate binary against `url`, with our migrations directory."""
    return subprocess.run(
        [
            dbmate_binary(),
            "--url",
            dbmate_url(url),
            "--migrations-dir",
            str(migrations_dir),
            "--no-dump-schema",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


TOOLKIT = str(Path(sys.executable).parent / "auth-toolkit")


async def run_cli(*args: str, timeout: float = 120, command: str = TOOLKIT) -> tuple[int, str, str]:
    """`auth-toolkit ARGS` (the installed console script) in a subprocess, without
    blocking this event loop (a server under test may run on it)."""
    proc = await asyncio.create_subprocess_exec(
        command,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()
