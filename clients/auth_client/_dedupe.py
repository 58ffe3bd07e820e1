"""Event-id deduplication in the consumer's own PostgreSQL.

Delivery is at least once, so a consumer may see one event twice (a relay retry, a
crash before the offset commit, a rebalance). Recording the event id in the same
transaction as the cleanup makes the pair atomic: either both happened or neither,
and a second delivery finds the id and changes nothing.

    CREATE TABLE processed_events (event_id uuid PRIMARY KEY, processed_at timestamptz ...)
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    import asyncpg

    from auth_client.contract import UserDeletedEvent

log = logging.getLogger("auth_client.events")

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$")


class ProcessedEvents:
    """The `processed_events` table (name configurable, optionally schema-qualified).

    `first_time(conn, event_id)` must run inside the caller's transaction: it
    inserts the id and answers whether it was new. A concurrent second delivery
    waits on the primary key until the first commits, then sees it.
    """

    def __init__(self, table: str = "processed_events") -> None:
        if not _IDENTIFIER.match(table):
            raise ValueError("table must be an identifier, optionally schema-qualified")
        self.table = table

    @property
    def ddl(self) -> str:
        return (
            f"CREATE TABLE IF NOT EXISTS {self.table} (\n"
            "    event_id     uuid        PRIMARY KEY,\n"
            "    processed_at timestamptz NOT NULL DEFAULT now()\n"
            ")"
        )

    async def create_table(self, conn: Any) -> None:
        await conn.execute(self.ddl)

    async def first_time(self, conn: Any, event_id: str) -> bool:
        row = await conn.fetchval(
            f"INSERT INTO {self.table} (event_id) VALUES ($1::uuid) "  # noqa: S608 - checked identifier
            "ON CONFLICT (event_id) DO NOTHING RETURNING true",
            event_id,
        )
        return row is True

    async def prune(self, conn: Any, older_than_s: float) -> int:
        """Forget ids older than any possible redelivery (e.g. the topic retention)."""
        status: str = await conn.execute(
            f"DELETE FROM {self.table} "  # noqa: S608 - checked identifier
            "WHERE processed_at < now() - make_interval(secs => $1)",
            older_than_s,
        )
        return int(status.rsplit(" ", 1)[-1])


def deduplicated(
    pool: asyncpg.Pool,
    handler: Callable[[Any, UserDeletedEvent], Awaitable[None]],
    processed: ProcessedEvents | None = None,
) -> Callable[[UserDeletedEvent], Awaitable[None]]:
    """A consumer handler that runs `handler(conn, event)` in a transaction on a
    connection from `pool`, once per event id: the id is recorded in the same
    transaction, and a redelivered event is skipped."""
    table = processed or ProcessedEvents()

    async def handle(event: UserDeletedEvent) -> None:
        async with pool.acquire() as conn, conn.transaction():
            if not await table.first_time(conn, event.event_id):
                log.debug("event %s already processed; skipping", event.event_id)
                return
            await handler(conn, event)

    return handle
