"""The PostgreSQL side: one embedded server with logical decoding on, and a database
per peer holding the service's schema, written the way auth-service writes it.

Each peer drains its own database of the one server (the relay marks rows and
deletes old ones; Debezium reads the WAL of its database only), so neither ever
sees the other's rows, and both read the same server.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import asyncpg

from auth_client.contract import (
    USER_DELETED_TYPE,
    UserDeletedEvent,
    decode_user_deleted,
    encode_user_deleted,
)
from auth_service.local.embedded import EmbeddedPostgres
from auth_service.store.migrations import migrate
from auth_service.store.outbox import NOTIFY_CHANNEL, write_event, write_user_deleted
from auth_service.store.pool import Budget
from auth_service.store.users import UserRepository

_BUDGET = Budget(10.0)
_WRITERS = 8  # connections writing a backlog


async def enable_logical_decoding(pg: EmbeddedPostgres) -> None:
    """`wal_level=logical` (Debezium's pgoutput needs it), and no walsender timeout:
    a paused (SIGSTOP) Connect answers no keepalive, and must find its replication
    connection still there when it resumes. Then a restart on the same port."""
    conn = await asyncpg.connect(pg.url)
    try:
        await conn.execute("ALTER SYSTEM SET wal_level = logical")
        await conn.execute("ALTER SYSTEM SET wal_sender_timeout = 0")
    finally:
        await conn.close()
    await asyncio.to_thread(pg.stop)
    await asyncio.to_thread(pg.start)


def postmaster_pid(pg: EmbeddedPostgres) -> int:
    return int((pg.data_dir / "postmaster.pid").read_text().split("\n", 1)[0])


async def new_database(pg: EmbeddedPostgres, name: str) -> str:
    conn = await asyncpg.connect(pg.url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
        # Deletions commit as in production: the embedded server's
        # synchronous_commit=off (its command line; a database's setting wins over
        # it) leaves a commit's WAL to the WAL writer, up to wal_writer_delay (200
        # ms) later, and logical decoding sends only flushed WAL.
        await conn.execute(f'ALTER DATABASE "{name}" SET synchronous_commit = on')
    finally:
        await conn.close()
    url = pg.url_for(name)
    await asyncio.to_thread(migrate, url)
    conn = await asyncpg.connect(url)
    try:
        # The bench vacuums and analyzes the outbox itself, at stated points
        # (`Outbox.analyze`): autovacuum starting in the middle of one drain and not
        # another would decide the relay's claim plan (bench/RESULTS.md, History 12).
        await conn.execute("ALTER TABLE outbox SET (autovacuum_enabled = false)")
    finally:
        await conn.close()
    return url


def _row(user_id: str) -> tuple[uuid.UUID, bytes]:
    event_id = uuid.uuid4()
    now = datetime.now(UTC)
    event = UserDeletedEvent(str(event_id), user_id, deleted_at=now, occurred_at=now)
    return event_id, encode_user_deleted(event)


class Outbox:
    """One database's users and outbox, written as auth-service writes them."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._conn: asyncpg.Connection | None = None
        self._users: list[uuid.UUID] = []

    @property
    def conn(self) -> asyncpg.Connection:
        assert self._conn is not None
        return self._conn

    async def open(self, users: int) -> None:
        """Connect and create `users` active users to delete later."""
        self._conn = await asyncpg.connect(self.url)
        rows = await self.conn.fetch(
            "INSERT INTO users (id, username, display_name) "
            "SELECT gen_random_uuid(), 'peer' || i, 'Peer ' || i FROM generate_series(1, $1) i "
            "RETURNING id",
            users,
        )
        self._users = [row["id"] for row in rows]

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()

    def next_keys(self, count: int) -> list[str]:
        """The keys of the next `count` deletions."""
        return [str(user_id) for user_id in reversed(self._users[-count:])]

    async def delete(self) -> str:
        """DeleteUser's transaction (auth_service.store.deletion): the soft delete and
        its outbox row, with the NOTIFY that wakes a relay. The key (user id)."""
        user_id = self._users.pop()
        async with self.conn.transaction():
            deletion = await UserRepository.soft_delete(self.conn, user_id, _BUDGET)
            assert deletion is not None
            await write_user_deleted(self.conn, deletion)
        return str(user_id)

    async def probe(self) -> str:
        """One outbox row without a users row (start-up probes)."""
        key = str(uuid.uuid4())
        event_id, payload = _row(key)
        await write_event(
            self.conn, event_type=USER_DELETED_TYPE, key=key, payload=payload, event_id=event_id
        )
        return key

    async def backlog(self, count: int) -> list[str]:
        """`count` outbox rows, one transaction each (as `count` deletions while no
        drainer ran), from several connections, without NOTIFY; the keys."""
        keys = [str(uuid.uuid4()) for _ in range(count)]
        rows = [(key, *_row(key)) for key in keys]

        async def write(part: list[tuple[str, uuid.UUID, bytes]]) -> None:
            conn = await asyncpg.connect(self.url)
            try:
                for key, event_id, payload in part:
                    await write_event(
                        conn,
                        event_type=USER_DELETED_TYPE,
                        key=key,
                        payload=payload,
                        event_id=event_id,
                        notify=False,
                    )
            finally:
                await conn.close()

        await asyncio.gather(*(write(rows[i::_WRITERS]) for i in range(_WRITERS)))
        return keys

    async def analyze(self) -> None:
        """What autovacuum does to the outbox: dead rows removed, statistics taken."""
        await self.conn.execute("VACUUM (ANALYZE) outbox")

    async def notify(self) -> None:
        await self.conn.execute("SELECT pg_notify($1, '')", NOTIFY_CHANNEL)

    async def written(self, keys: list[str]) -> dict[str, tuple[UserDeletedEvent, bytes]]:
        """The events stored for `keys`, decoded, with the payload's bytes."""
        rows = await self.conn.fetch(
            "SELECT partition_key, payload FROM outbox WHERE partition_key = ANY($1::text[])", keys
        )
        return {
            row["partition_key"]: (
                decode_user_deleted(bytes(row["payload"])),
                bytes(row["payload"]),
            )
            for row in rows
        }

    async def transactions_open(self) -> int:
        """Other sessions of this database inside a transaction now."""
        found: int = await self.conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid() AND backend_type = 'client backend' "
            "AND xact_start IS NOT NULL"
        )
        return found

    async def holds(self, keys: list[str]) -> int:
        """How many of `keys` are this outbox's."""
        found: int = await self.conn.fetchval(
            "SELECT count(*) FROM outbox WHERE partition_key = ANY($1::text[])", keys
        )
        return found

    async def unpublished(self) -> int:
        found: int = await self.conn.fetchval(
            "SELECT count(*) FROM outbox WHERE published_at IS NULL"
        )
        return found

    async def drop_slot(self, slot: str) -> int:
        """Drop replication slot `slot` and its publication; how many slots of this
        database remain."""
        await self.conn.execute(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
            "WHERE slot_name = $1 AND NOT active",
            slot,
        )
        await self.conn.execute(f'DROP PUBLICATION IF EXISTS "{slot}_pub"')
        left: int = await self.conn.fetchval(
            "SELECT count(*) FROM pg_replication_slots WHERE database = current_database()"
        )
        return left
