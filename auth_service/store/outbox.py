"""The transactional outbox: all SQL about the `outbox` table and the events'
positions.

Writers insert an event in the caller's transaction (`write_user_deleted`, called by
`store.deletion.delete_user`; `write_user_created`, called by
`UserRepository.create`) and send a NOTIFY that PostgreSQL delivers only on
commit, to wake the relay. The relay claims, marks and prunes rows through
`OutboxStore`.

Positions: while user_created events are on, each user event takes the next number
of `event_position` in the transaction that writes it (`next_position`), as that
transaction's last step before the outbox row (`write_user_created`,
`write_user_deleted_in_order`). The row lock is held until commit, so numbers
follow commit order without holes (a rollback gives its number back), and a
snapshot that reads `current_position` sees exactly the events up to it
(`ExportUserStates`). With them off, deletions carry position 0 ("not in the
sequence", as every event written before positions existed).

Claim rule: an unpublished row is claimable when no earlier (lower id) row of the
same partition key, among the event types the relay publishes, is still
unpublished. So, with any number of relays, one key's events are published
strictly one after another in id order, while different keys proceed in parallel
(`FOR UPDATE SKIP LOCKED`); a row of a type no relay publishes never holds back
the others. Writers of one key are serialized by the users row lock, so id order
is commit order for a key.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from auth_client.contract import (
    USER_CREATED_TYPE,
    USER_DELETED_TYPE,
    UserCreatedEvent,
    UserDeletedEvent,
    encode_user_created,
    encode_user_deleted,
)
from auth_service import tracing
from auth_service.store.pool import execute_in_chunks

if TYPE_CHECKING:
    from collections.abc import Sequence

    from auth_service.store.pool import Conn
    from auth_service.store.users import Deletion, User

NOTIFY_CHANNEL = "auth_outbox"

_INSERT = """
INSERT INTO outbox (event_id, event_type, partition_key, payload, traceparent)
VALUES ($1, $2, $3, $4, $5)
"""
_NOTIFY = "SELECT pg_notify($1, '')"
_NEXT_POSITION = """
UPDATE event_position SET last_position = last_position + 1 RETURNING last_position
"""
_POSITION = "SELECT last_position FROM event_position"
_CLAIM = """
SELECT o.id, o.event_id, o.event_type, o.partition_key, o.payload, o.created_at,
       o.traceparent
FROM outbox AS o
WHERE o.published_at IS NULL
  AND o.event_type = ANY($2::text[])
  -- The key's first unpublished event: one probe of outbox_unpublished_key_idx per
  -- candidate, whatever the statistics say (a NOT EXISTS was planned as a rescan
  -- of every unpublished row per candidate when they said none was unpublished).
  AND o.id = (
      SELECT min(e.id) FROM outbox AS e
      WHERE e.partition_key = o.partition_key AND e.published_at IS NULL
        AND e.event_type = ANY($2::text[])
  )
ORDER BY o.id
LIMIT $1
FOR UPDATE OF o SKIP LOCKED
"""
_MARK = "UPDATE outbox SET published_at = now() WHERE id = ANY($1::bigint[])"
_FAIL = """
UPDATE outbox SET attempts = attempts + 1, last_error = left($2, 1000)
WHERE id = ANY($1::bigint[])
"""
_LAG = """
SELECT count(*), coalesce(extract(epoch FROM now() - min(created_at)), 0)::float8
FROM outbox WHERE published_at IS NULL
"""
_PRUNE = """
DELETE FROM outbox WHERE id IN (
    SELECT id FROM outbox
    WHERE published_at IS NOT NULL AND published_at < now() - make_interval(secs => $1)
    LIMIT $2
)
"""


@dataclass(frozen=True, slots=True)
class OutboxRecord:
    """One claimed row, ready to publish."""

    id: int
    event_id: uuid.UUID
    event_type: str
    key: str
    payload: bytes
    created_at: datetime
    # W3C trace context of the transaction that wrote the event, when it was traced.
    traceparent: str | None = None


@dataclass(frozen=True, slots=True)
class Lag:
    """How far the relay is behind: unpublished rows and the age of the oldest."""

    unpublished: int
    oldest_age_s: float


async def write_event(
    conn: Conn,
    *,
    event_type: str,
    key: str,
    payload: bytes,
    event_id: uuid.UUID | None = None,
    notify: bool = True,
    traceparent: str | None = None,
) -> uuid.UUID:
    """Insert an event in the caller's transaction; NOTIFY wakes the relay on commit.
    `traceparent`: the trace the event continues (default: the current span's)."""
    event_id = event_id or uuid.uuid4()
    if traceparent is None:
        traceparent = tracing.current_traceparent()
    await conn.execute(_INSERT, event_id, event_type, key, payload, traceparent)
    if notify:
        await conn.execute(_NOTIFY, NOTIFY_CHANNEL)
    return event_id


async def next_position(conn: Conn) -> int:
    """The next event position, in the caller's transaction: its row lock is held
    until that transaction ends (so call it last, just before the outbox row)."""
    position: int = await conn.fetchval(_NEXT_POSITION)
    return position


async def current_position(conn: Conn) -> int:
    """The position of the last event committed before the caller's snapshot."""
    position: int = await conn.fetchval(_POSITION)
    return position


def user_deleted_payload(
    event_id: uuid.UUID, deletion: Deletion, now: datetime, position: int = 0
) -> bytes:
    """The serialized `auth.v1.UserDeleted`: the deleted user only, never the admin."""
    deleted_at = deletion.user.deleted_at
    assert deleted_at is not None
    return encode_user_deleted(
        UserDeletedEvent(
            event_id=str(event_id),
            user_id=str(deletion.user.id),
            deleted_at=deleted_at,
            occurred_at=now,
            position=position,
        )
    )


async def write_user_deleted(conn: Conn, deletion: Deletion) -> None:
    """The DeleteUser `on_deleted` hook: the event commits with the soft delete.
    Position 0: user_created events are off, there is no sequence to keep."""
    await _write_user_deleted(conn, deletion, 0)


async def write_user_deleted_in_order(conn: Conn, deletion: Deletion) -> None:
    """The `on_deleted` hook while user_created events are on: the event takes the
    next position (one sequence for both kinds)."""
    await _write_user_deleted(conn, deletion, await next_position(conn))


async def _write_user_deleted(conn: Conn, deletion: Deletion, position: int) -> None:
    event_id = uuid.uuid4()
    payload = user_deleted_payload(event_id, deletion, datetime.now(UTC), position)
    await write_event(
        conn,
        event_type=USER_DELETED_TYPE,
        key=str(deletion.user.id),
        payload=payload,
        event_id=event_id,
    )


async def write_user_created(conn: Conn, user: User) -> None:
    """The CreateUser `on_created` hook (when user_created events are on): the event
    commits with the insert. Ids and times only, never the profile."""
    event_id = uuid.uuid4()
    position = await next_position(conn)
    payload = encode_user_created(
        UserCreatedEvent(
            event_id=str(event_id),
            user_id=str(user.id),
            created_at=user.created_at,
            occurred_at=datetime.now(UTC),
            position=position,
        )
    )
    await write_event(
        conn, event_type=USER_CREATED_TYPE, key=str(user.id), payload=payload, event_id=event_id
    )


class OutboxStore:
    """The relay's queries. `claim` / `mark_published` / `record_failure` run on one
    connection inside the caller's transaction, which holds the row locks while the
    batch is being published."""

    @staticmethod
    async def claim(conn: Conn, limit: int, event_types: Sequence[str]) -> list[OutboxRecord]:
        rows = await conn.fetch(_CLAIM, limit, list(event_types))
        return [
            OutboxRecord(
                id=row["id"],
                event_id=row["event_id"],
                event_type=row["event_type"],
                key=row["partition_key"],
                payload=bytes(row["payload"]),
                created_at=row["created_at"],
                traceparent=row["traceparent"],
            )
            for row in rows
        ]

    @staticmethod
    async def mark_published(conn: Conn, ids: Sequence[int]) -> None:
        if ids:
            await conn.execute(_MARK, list(ids))

    @staticmethod
    async def record_failure(conn: Conn, ids: Sequence[int], error: str) -> None:
        if ids:
            await conn.execute(_FAIL, list(ids), error)

    @staticmethod
    async def lag(conn: Conn) -> Lag:
        row = await conn.fetchrow(_LAG)
        assert row is not None
        return Lag(unpublished=int(row[0]), oldest_age_s=max(0.0, float(row[1])))

    @staticmethod
    async def prune(conn: Conn, retention_s: float, chunk: int = 1000) -> int:
        """Delete rows published more than `retention_s` ago, in chunks; unpublished
        rows are never deleted. Returns how many were deleted."""
        return await execute_in_chunks(conn, _PRUNE, retention_s, chunk=chunk)
