"""User model and UserRepository: all SQL about the users table.

One query answers "which state is each of these ids in" (`states`, used by
UserExists, BatchUserExists and the batched lookup alike), answering in the order
asked; the row -> state rule is written once for ids (in that query) and once for
a loaded row (`state_of`), side by side below, and a test holds them equal.
"""

from __future__ import annotations

import contextlib
import math
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

import asyncpg

from auth_client.contract import UserState
from auth_service import tracing
from auth_service.errors import AlreadyExistsError, UnavailableError
from auth_service.store.pool import Budget, Conn, connection, translate_errors
from auth_service.store.status import DatabaseStatus

if TYPE_CHECKING:
    from opentelemetry.trace import SpanContext

    from auth_service.store.replicas import ReadReplicas, Replica


# A state number (of the state query, or the wire) -> UserState, without a call.
BY_NUMBER: dict[int, UserState] = {int(state): state for state in UserState}


def state_of(active: bool | None) -> UserState:
    """The row -> state rule: no row is NOT_FOUND, a row without `deleted_at`
    ACTIVE, a soft-deleted row DELETED. `active` is `deleted_at IS NULL`, or None
    when there is no row. (The same rule, for ids, is `_STATES` below.)"""
    if active is None:
        return UserState.NOT_FOUND
    return UserState.ACTIVE if active else UserState.DELETED


# The one state query: the UserState number of each id of a comma-separated list of
# canonical ids, in the order given (duplicates answered each time). One text
# parameter and one int[] answer: no per-id encoding or decoding in Python.
_STATES = """
SELECT coalesce(array_agg(
         CASE WHEN u.id IS NULL THEN 3 WHEN u.deleted_at IS NULL THEN 1 ELSE 2 END
         ORDER BY k.n), '{}')
FROM unnest(pg_catalog.string_to_array($1, ',')::uuid[]) WITH ORDINALITY AS k(id, n)
LEFT JOIN users AS u ON u.id = k.id
"""


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


# Runs inside CreateUser's transaction for the user just inserted: with user_created
# events on, `outbox.write_user_created` writes the event there (tests substitute one
# that fails); without it the insert is one statement.
OnCreated = Callable[[Conn, "User"], Awaitable[None]]


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


# `read_states`'s freshness of an answer from the primary: complete, and final.
PRIMARY = math.inf


class UserRepository:
    """Queries against the users table. Every method takes a time `Budget`; every
    query is counted in `status`. `changed(id)` is told of every user this replica
    creates or deletes, once committed (the state cache forgets it: read your
    writes without waiting for the change notification).

    With `reads` (DATABASE_READ_URL), `read_states` and `get` read a replica when
    one is readable and fall back to the primary when it cannot answer; a user a
    replica does not have is looked up on the primary (`get`) or left to the caller
    to confirm there (`read_states` says where its answer came from)."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        status: DatabaseStatus | None = None,
        *,
        changed: Callable[[str], None] = lambda _key: None,
        reads: ReadReplicas | None = None,
    ) -> None:
        self._pool = pool
        self.status = status if status is not None else DatabaseStatus()
        self.changed = changed
        self.reads = reads

    @property
    def pool(self) -> asyncpg.Pool:
        return self._pool

    def connection(self, budget: Budget) -> contextlib.AbstractAsyncContextManager[Conn]:
        """A pooled connection for one operation (see `pool.connection`)."""
        return connection(self._pool, budget, self.status)

    async def state(self, key: str, budget: Budget) -> UserState:
        """The state of one canonical (lower-case) id."""
        return BY_NUMBER[(await self.states(key, budget))[0]]

    async def states(
        self,
        joined: str,
        budget: Budget,
        served: Sequence[SpanContext | None] = (),
        *,
        on: Replica | None = None,
    ) -> list[int]:
        """The UserState number of each id of `joined` (canonical, lower-case ids
        separated by commas), in order, from the primary (or the replica `on`).
        `served`: when tracing, the calls this one query answers (default: the
        current one)."""
        if not joined:
            return []
        source = "primary" if on is None else "replica"
        with tracing.query("SELECT", "users", served=served) as span:
            span.set_attribute("auth.ids", joined.count(",") + 1)
            span.set_attribute("auth.db.source", source)
            async with self._connection(budget, on) as conn:
                found: list[int] = await conn.fetchval(_STATES, joined, timeout=budget.seconds)
        return found

    async def read_states(
        self, joined: str, budget: Budget, served: Sequence[SpanContext | None] = ()
    ) -> tuple[list[int], float]:
        """`states` from a readable replica if there is one, else (or when it
        cannot answer) from the primary; and how fresh the answer is: the
        replica's `fresh_as_of` before the query (every commit before that time
        is in it), `PRIMARY` (inf) when the primary answered: only its NOT_FOUND is
        final."""
        replica = self.reads.pick() if self.reads is not None else None
        if replica is not None:
            fresh_as_of = replica.fresh_as_of  # before the query: it only grows
            try:
                found = await self.states(joined, budget, served, on=replica)
            except UnavailableError as exc:
                self._replica_failed(replica, exc)
            else:
                replica.reads += 1
                return found, fresh_as_of
        return await self.states(joined, budget, served), PRIMARY

    async def get(self, user_id: uuid.UUID, budget: Budget) -> User | None:
        """The user, deleted or not; None when the id was never created. From a
        readable replica if there is one, but None only ever from the primary."""
        replica = self.reads.pick() if self.reads is not None else None
        if replica is not None:
            try:
                user = await self._get(user_id, budget, replica)
            except UnavailableError as exc:
                self._replica_failed(replica, exc)
            else:
                replica.reads += 1
                if user is not None:
                    return user
        return await self._get(user_id, budget, None)

    async def _get(self, user_id: uuid.UUID, budget: Budget, on: Replica | None) -> User | None:
        source = "primary" if on is None else "replica"
        with tracing.query("SELECT", "users") as span:
            span.set_attribute("auth.db.source", source)
            async with self._connection(budget, on) as conn:
                row = await conn.fetchrow(_GET, user_id, timeout=budget.seconds)
        return None if row is None else _user(row)

    def _connection(
        self, budget: Budget, on: Replica | None
    ) -> contextlib.AbstractAsyncContextManager[Conn]:
        if on is None:
            return self.connection(budget)
        assert on.pool is not None
        return connection(on.pool, budget, on.status)

    def _replica_failed(self, replica: Replica, exc: UnavailableError) -> None:
        assert self.reads is not None
        self.reads.failed(replica, exc.__cause__ or exc)

    async def create(
        self,
        username: str,
        display_name: str,
        email: str | None,
        budget: Budget,
        on_created: OnCreated | None = None,
    ) -> User:
        """Insert a user; with `on_created`, in one transaction with what it writes
        (the `user_created` outbox row): both commit or neither does."""
        args = (uuid.uuid4(), username, display_name, email)
        with tracing.query("INSERT", "users"):
            async with self.connection(budget) as conn:
                try:
                    if on_created is None:
                        user = await self._insert(conn, args, budget)
                    else:
                        async with conn.transaction():
                            user = await self._insert(conn, args, budget)
                            await on_created(conn, user)
                except asyncpg.UniqueViolationError as exc:
                    raise AlreadyExistsError("an active user already has this username") from exc
        self.changed(str(user.id))
        return user

    @staticmethod
    async def _insert(conn: Conn, args: tuple[object, ...], budget: Budget) -> User:
        row = await conn.fetchrow(_INSERT, *args, timeout=budget.seconds)
        assert row is not None  # INSERT ... RETURNING
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
