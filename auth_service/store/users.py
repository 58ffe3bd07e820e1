"""User model and UserRepository: all SQL about the users table.

One query answers "which state is each of these ids in" (`active_flags`, used by
UserExists, BatchUserExists and the batched lookup alike) and one rule turns its
answer into a `UserState` (`state_of`).
"""

from __future__ import annotations

import contextlib
import enum
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from auth_service.errors import AlreadyExistsError
from auth_service.store.pool import Budget, Conn, connection, translate_errors
from auth_service.store.status import DatabaseStatus


class UserState(enum.Enum):
    ACTIVE = "active"
    DELETED = "deleted"
    NOT_FOUND = "not_found"


def state_of(active: bool | None) -> UserState:
    """The one row -> state rule: no row is NOT_FOUND, a row without `deleted_at`
    ACTIVE, a soft-deleted row DELETED. `active` is `deleted_at IS NULL`, or None
    when there is no row."""
    if active is None:
        return UserState.NOT_FOUND
    return UserState.ACTIVE if active else UserState.DELETED


@dataclass(frozen=True, slots=True)
class User:
    id: uuid.UUID
    username: str
    display_name: str
    email: str | None
    created_at: datetime
    updated_at: datetime
    deleted_at: datetime | None
    # When the personal fields were replaced by tombstones (see ERASE below).
    erased_at: datetime | None = None

    @property
    def state(self) -> UserState:
        return state_of(self.deleted_at is None)


@dataclass(frozen=True, slots=True)
class Deletion:
    """Outcome of a soft delete. `newly_deleted` is False when it was already deleted,
    in which case `user.deleted_at` is the original deletion time."""

    user: User
    newly_deleted: bool


_COLUMNS = "id, username, display_name, email, created_at, updated_at, deleted_at, erased_at"

# The one erasure rule: what a deleted user keeps is its id, created_at,
# deleted_at and bookkeeping; username and display_name become 'deleted:<id>' (a
# ':' that no real username may contain, so a tombstone never collides with one)
# and the email is gone.
TOMBSTONE_PREFIX = "deleted:"
ERASE = (
    f"username = '{TOMBSTONE_PREFIX}' || id::text, display_name = '{TOMBSTONE_PREFIX}' || id::text,"
    " email = NULL, erased_at = now(), updated_at = now()"
)
_ACTIVE_FLAGS = "SELECT id::text, deleted_at IS NULL FROM users WHERE id = ANY($1::uuid[])"
_GET = f"SELECT {_COLUMNS} FROM users WHERE id = $1"  # noqa: S608 - constant columns
_INSERT = f"""
INSERT INTO users (id, username, display_name, email)
VALUES ($1, $2, $3, $4)
RETURNING {_COLUMNS}
"""  # noqa: S608
_SOFT_DELETE = f"""
UPDATE users SET deleted_at = now(), updated_at = now()
WHERE id = $1 AND deleted_at IS NULL
RETURNING {_COLUMNS}
"""  # noqa: S608
_SOFT_DELETE_AND_ERASE = f"""
UPDATE users SET deleted_at = now(), {ERASE}
WHERE id = $1 AND deleted_at IS NULL
RETURNING {_COLUMNS}
"""  # noqa: S608


def _user(row: asyncpg.Record) -> User:
    return User(
        id=row["id"],
        username=row["username"],
        display_name=row["display_name"],
        email=row["email"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        deleted_at=row["deleted_at"],
        erased_at=row["erased_at"],
    )


class UserRepository:
    """Queries against the users table. Every method takes a time `Budget`; every
    query is counted in `status`."""

    def __init__(self, pool: asyncpg.Pool, status: DatabaseStatus | None = None) -> None:
        self._pool = pool
        self.status = status if status is not None else DatabaseStatus()

    @property
    def pool(self) -> asyncpg.Pool:
        return self._pool

    def connection(self, budget: Budget) -> contextlib.AbstractAsyncContextManager[Conn]:
        """A pooled connection for one operation (see `pool.connection`)."""
        return connection(self._pool, budget, self.status)

    async def state(self, key: str, budget: Budget) -> UserState:
        """The state of one canonical (lower-case) id."""
        return state_of((await self.active_flags((key,), budget)).get(key))

    async def active_flags(self, keys: Sequence[str], budget: Budget) -> dict[str, bool]:
        """For each canonical (lower-case) id text that exists: True when active,
        False when deleted. Ids never created are absent (`state_of` turns an entry
        into a state). Text in, text out: no `uuid.UUID` objects on the hot path."""
        if not keys:
            return {}
        unique = list(dict.fromkeys(keys))
        async with self.connection(budget) as conn:
            rows = await conn.fetch(_ACTIVE_FLAGS, unique, timeout=budget.seconds)
        return dict(rows)  # type: ignore[arg-type]

    async def get(self, user_id: uuid.UUID, budget: Budget) -> User | None:
        """The user, deleted or not; None when the id was never created."""
        async with self.connection(budget) as conn:
            row = await conn.fetchrow(_GET, user_id, timeout=budget.seconds)
        return None if row is None else _user(row)

    async def create(
        self, username: str, display_name: str, email: str | None, budget: Budget
    ) -> User:
        async with self.connection(budget) as conn:
            try:
                row = await conn.fetchrow(
                    _INSERT, uuid.uuid4(), username, display_name, email, timeout=budget.seconds
                )
            except asyncpg.UniqueViolationError as exc:
                raise AlreadyExistsError("an active user already has this username") from exc
        assert row is not None
        return _user(row)

    @staticmethod
    async def soft_delete(
        conn: Conn, user_id: uuid.UUID, budget: Budget, *, erase: bool = True
    ) -> Deletion | None:
        """Soft-delete inside the caller's transaction (so the caller can write the
        `user_deleted` outbox row in the same one), erasing the personal fields at
        once unless `erase` is False (a retention period: the erasure job does it
        later). None when the id never existed.

        Concurrent deletes of one user: the row lock makes exactly one of them see
        `newly_deleted=True`; the others read the committed deleted_at.
        """
        async with translate_errors(budget):
            sql = _SOFT_DELETE_AND_ERASE if erase else _SOFT_DELETE
            row = await conn.fetchrow(sql, user_id, timeout=budget.seconds)
            if row is not None:
                return Deletion(_user(row), newly_deleted=True)
            row = await conn.fetchrow(_GET, user_id, timeout=budget.seconds)
        if row is None:
            return None
        return Deletion(_user(row), newly_deleted=False)


async def find_active_by_username(conn: Conn, username: str) -> User | None:
    row = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM users WHERE lower(username) = lower($1) AND deleted_at IS NULL",  # noqa: S608
        username,
    )
    return None if row is None else _user(row)
