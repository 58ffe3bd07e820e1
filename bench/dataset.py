"""The benchmark database: embedded PostgreSQL holding a realistic `users` table.

N users with random (v4) ids, every 20th soft-deleted (5%), loaded with one
`INSERT ... SELECT generate_series` into the migrated schema (all indexes in
place), then VACUUM ANALYZE. The data directory is kept under bench/.data, so only
the first run of a given size pays for the load; a database is reused only when
its `bench_dataset` row says the load finished.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Self

import asyncpg

from auth_service.local.embedded import EmbeddedPostgres
from auth_service.store.erasure import erase_due
from auth_service.store.migrations import migrate

DATA_DIR = Path(__file__).resolve().parent / ".data"
DELETED_EVERY = 20  # 5% soft-deleted

# Deleted users are loaded as DeleteUser leaves them: personal data erased.
_LOAD = """
INSERT INTO users (id, username, display_name, email, created_at, updated_at, deleted_at, erased_at)
SELECT id,
       CASE WHEN deleted THEN 'deleted:' || id ELSE 'user' || g END,
       CASE WHEN deleted THEN 'deleted:' || id ELSE 'User number ' || g END,
       CASE WHEN deleted THEN NULL ELSE 'user' || g || '@example.com' END,
       now() - interval '30 days', now() - interval '30 days',
       CASE WHEN deleted THEN now() - interval '1 day' END,
       CASE WHEN deleted THEN now() - interval '1 day' END
FROM (
    SELECT gen_random_uuid() AS id, g, g % $2 = 0 AS deleted
    FROM generate_series($1::bigint * $3 + 1, least($1::bigint * $3 + $3, $4)) AS g
) AS s
"""


@dataclass
class Sample:
    """Ids drawn at random from the table, for request bodies and insert senders."""

    active: list[uuid.UUID] = field(default_factory=list)
    deleted: list[uuid.UUID] = field(default_factory=list)

    def missing(self, count: int) -> list[uuid.UUID]:
        return [uuid.uuid4() for _ in range(count)]


class Dataset:
    """Starts the embedded server, makes sure `bench_users_<N>` is loaded, and
    stops the server on exit. `url` is the database holding the users table."""

    def __init__(self, users: int, *, data_dir: Path = DATA_DIR, log: bool = True) -> None:
        self.users = users
        self.name = f"bench_users_{users}"
        self._data_dir = data_dir
        self._log = log
        self.pg: EmbeddedPostgres | None = None
        self.load_seconds: float | None = None  # None: reused from an earlier run
        self.server_version = ""

    @property
    def server(self) -> EmbeddedPostgres:
        assert self.pg is not None, "dataset not started"
        return self.pg

    @property
    def url(self) -> str:
        return self.server.url_for(self.name)

    def url_for(self, database: str) -> str:
        return self.server.url_for(database)

    def postmaster_pid(self) -> int:
        """PID of the PostgreSQL server (its backends are its children)."""
        pid_file = self.server.data_dir / "postmaster.pid"
        return int(pid_file.read_text().split("\n", 1)[0])

    async def __aenter__(self) -> Self:
        self._data_dir.mkdir(parents=True, exist_ok=True)
        self.pg = EmbeddedPostgres(self._data_dir / "pg")
        await asyncio.to_thread(self.pg.start)
        try:
            await self._ensure_loaded()
        except BaseException:
            await asyncio.to_thread(self.pg.close)
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        pg, self.pg = self.pg, None
        if pg is not None:
            await asyncio.to_thread(pg.close)

    def _say(self, text: str) -> None:
        if self._log:
            print(f"  dataset: {text}", flush=True)

    async def _ensure_loaded(self) -> None:
        admin = await asyncpg.connect(self.server.url)
        try:
            self.server_version = str(await admin.fetchval("SHOW server_version"))
            exists = await admin.fetchval(
                "SELECT true FROM pg_database WHERE datname = $1", self.name
            )
            if exists and await self._complete():
                self._say(f"reusing {self.name} ({self.users:,} users) from {self._data_dir}")
                await self._upgrade()
                return
            if exists:
                await admin.execute(f'DROP DATABASE "{self.name}" WITH (FORCE)')
            await admin.execute(f'CREATE DATABASE "{self.name}"')
        finally:
            await admin.close()
        started = time.perf_counter()
        await asyncio.to_thread(migrate, self.url)
        await self._load()
        self.load_seconds = time.perf_counter() - started
        self._say(f"loaded {self.users:,} users in {self.load_seconds:.1f}s")

    async def _upgrade(self) -> None:
        """A dataset kept from an earlier release: its schema and rows as this
        release leaves them (migrations applied, deleted users erased), so the
        server measured neither refuses it nor erases it while being measured."""
        await asyncio.to_thread(migrate, self.url)
        conn = await asyncpg.connect(self.url)
        try:
            erased = await erase_due(conn, 0, batch=50_000)
        finally:
            await conn.close()
        if erased:
            self._say(f"erased {erased:,} deleted users kept from an earlier release")

    async def _complete(self) -> bool:
        conn = await asyncpg.connect(self.url)
        try:
            has_meta = await conn.fetchval("SELECT to_regclass('bench_dataset') IS NOT NULL")
            if not has_meta:
                return False
            return bool(await conn.fetchval("SELECT users = $1 FROM bench_dataset", self.users))
        finally:
            await conn.close()

    async def _load(self) -> None:
        chunk = 100_000
        chunks = (self.users + chunk - 1) // chunk
        self._say(f"loading {self.users:,} users into {self.name} (first run only)")

        async def load_part(part: int) -> None:
            conn = await asyncpg.connect(self.url)
            try:
                for index in range(part, chunks, 2):
                    await conn.execute(_LOAD, index, DELETED_EVERY, chunk, self.users)
            finally:
                await conn.close()

        # Two loaders: one per core of the machines this was written on.
        await asyncio.gather(load_part(0), load_part(1))
        conn = await asyncpg.connect(self.url)
        try:
            await conn.execute("VACUUM (ANALYZE) users")
            await conn.execute(
                "CREATE TABLE bench_dataset ("
                "users integer NOT NULL, loaded_at timestamptz NOT NULL DEFAULT now())"
            )
            await conn.execute("INSERT INTO bench_dataset (users) VALUES ($1)", self.users)
        finally:
            await conn.close()

    async def sample(self, active: int, deleted: int) -> Sample:
        """`active` active and `deleted` soft-deleted ids, drawn at random."""
        conn = await asyncpg.connect(self.url)
        try:
            fraction = min(1.0, 1.5 * (active + deleted * DELETED_EVERY) / self.users)
            rows = await conn.fetch(
                "SELECT id, deleted_at IS NULL AS active FROM users WHERE random() < $1",
                fraction,
            )
        finally:
            await conn.close()
        out = Sample()
        for row in rows:
            if row["active"] and len(out.active) < active:
                out.active.append(row["id"])
            elif not row["active"] and len(out.deleted) < deleted:
                out.deleted.append(row["id"])
        return out
