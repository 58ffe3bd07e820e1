"""Helpers for the downstream-migration toolkit tests: a downstream service database
modeled on the platform, catalog snapshots, dbmate and CLI runners."""

from __future__ import annotations

import asyncio
import contextlib
import struct
import subprocess
import sys
import uuid
import zlib
from dataclasses import dataclass
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


async def row_snapshot(url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table of the database (row-for-row comparisons: what a
    refused or dry run must leave exactly as it was)."""
    conn = await asyncpg.connect(url, server_settings={"search_path": ""})
    try:
        tables = await conn.fetch(
            "SELECT c.oid::regclass::text FROM pg_class c"
            " JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition"
            " AND n.nspname NOT IN ('pg_catalog', 'information_schema')"
        )
        return {
            t[0]: sorted(tuple(map(str, r)) for r in await conn.fetch(f"SELECT * FROM {t[0]}"))
            for t in tables
        }
    finally:
        await conn.close()


@dataclass
class Platform:
    """The downstream database filled with users of a real auth-service: `active`
    users, users `deleted` there (still in the local users copy), and ids `never`
    created there (only in the local copy)."""

    url: str
    target: str
    active: list[str]
    deleted: list[str]
    never: list[str]


async def plant(url: str, target: str, active: list[str], deleted: list[str]) -> Platform:
    """Rows with orphans in several services:

    - messaging.conversations: 40, no. 1 created by deleted[0]; it has 25 messages
      and 3 participants (ON DELETE CASCADE from conversations);
    - messaging.messages: 2 per other conversation (active senders); deleted[1] sent
      3 live and 2 soft-deleted messages, deleted[0] one soft-deleted message;
    - content.posts: 30 by active users, 1 by a never-created id, with 2 comments
      (CASCADE from posts); content.comments (legacy is_deleted): 1 live and 1
      flagged comment by deleted[1];
    - messaging_eu: the same schema, one orphan conversation with 2 messages.
    """
    never = [str(uuid.uuid4())]
    a, d, n = active, deleted, never
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("TRUNCATE public.users CASCADE")
        await conn.executemany(
            "INSERT INTO public.users (id, username) VALUES ($1, $2)",
            [(uid, f"u{i}") for i, uid in enumerate(a + d + n)],
        )
        convs = [(i, a[i % len(a)] if i != 1 else d[0]) for i in range(1, 41)]
        await conn.executemany(
            "INSERT INTO messaging.conversations (id, created_by) VALUES ($1, $2)", convs
        )
        await conn.executemany(
            "INSERT INTO messaging.conversation_participants VALUES (1, $1)",
            [(a[0],), (a[1],), (d[1],)],
        )
        messages = [(m, 1, a[m % len(a)], None) for m in range(1, 26)]
        messages += [
            (100 + 2 * i + k, i, a[i % len(a)], None) for i in range(2, 41) for k in (0, 1)
        ]
        messages += [(200 + k, 2, d[1], None) for k in range(3)]
        messages += [(210 + k, 2, d[1], "2020-01-01") for k in range(2)]
        messages += [(220, 2, d[0], "2020-01-01")]
        await conn.executemany(
            "INSERT INTO messaging.messages (id, conversation_id, sender_id, deleted_at)"
            " VALUES ($1, $2, $3, $4::text::timestamptz)",
            messages,
        )
        posts = [(p, a[p % len(a)]) for p in range(1, 31)] + [(31, n[0])]
        await conn.executemany(
            "INSERT INTO content.posts (id, author_id, body) VALUES ($1, $2, 'p')", posts
        )
        comments = [(c, c, a[c % len(a)], False) for c in range(1, 31)]
        comments += [(40, 31, a[0], False), (41, 31, a[1], False)]
        comments += [(50, 1, d[1], False), (51, 2, d[1], True)]
        await conn.executemany("INSERT INTO content.comments VALUES ($1, $2, $3, $4)", comments)
        await conn.execute(
            "INSERT INTO messaging_eu.conversations (id, created_by) VALUES (1, $1), (2, $2)",
            d[0],
            a[0],
        )
        await conn.execute(
            "INSERT INTO messaging_eu.messages (id, conversation_id, sender_id)"
            " VALUES (1, 1, $1), (2, 1, $1), (3, 2, $1)",
            a[0],
        )
    finally:
        await conn.close()
    return Platform(url, target, active, deleted, never)


def migrate_url(url: str) -> str:
    """`url` as golang-migrate's postgres driver (lib/pq) takes it: lib/pq insists
    on TLS unless told `sslmode`; the test server has none."""
    return url + ("&" if "?" in url else "?") + "sslmode=disable"


def png_size(path: Path) -> tuple[int, int]:
    """Width and height of a PNG whose every chunk's CRC is right."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    at, kinds, idat = 8, [], b""
    while at < len(data):
        (length,) = struct.unpack(">I", data[at : at + 4])
        kind, body = data[at + 4 : at + 8], data[at + 8 : at + 8 + length]
        (crc,) = struct.unpack(">I", data[at + 8 + length : at + 12 + length])
        assert zlib.crc32(kind + body) == crc, kind
        kinds.append(kind)
        idat += body if kind == b"IDAT" else b""
        at += 12 + length
    assert kinds[0] == b"IHDR"
    assert kinds[-1] == b"IEND"
    width, height = struct.unpack(">II", data[16:24])
    assert len(zlib.decompress(idat)) == height * (1 + 3 * width)
    return width, height
