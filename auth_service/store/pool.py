"""Connection pool, and the one translation of asyncpg errors.

Repository code runs its queries inside `connection(...)` (a pooled connection,
counted in the `DatabaseStatus`) or `translate_errors(...)`, which turns the
failures of the layer below into domain errors:

- connection refused / lost, server shutting down, too many connections,
  pool exhausted                               -> UnavailableError
- a query or acquire outliving its time budget -> DeadlineExceededError when the
  budget came from the caller's deadline, else UnavailableError
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from auth_service.config import Settings
from auth_service.errors import DeadlineExceededError, ServiceError, UnavailableError
from auth_service.store.status import DatabaseStatus

log = logging.getLogger(__name__)

# Errors that mean "the database cannot answer right now", not "the request is bad".
_UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,  # includes ConnectionDoesNotExistError
    # "cannot switch to state N; another operation is in progress": a connection
    # that PostgreSQL cut (fast shutdown, failover) in the middle of an operation.
    # Not an InterfaceError subclass.
    asyncpg.InternalClientError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.TooManyConnectionsError,
    asyncpg.ReadOnlySQLTransactionError,  # a failover left us on a standby
    # 55000 and kin: "database is not currently accepting connections" (being
    # dropped, restored or shut down), lock not available: try again later.
    asyncpg.ObjectNotInPrerequisiteStateError,
)


# A connection as handed out by the pool, or a plain one.
Conn = asyncpg.Connection | PoolConnectionProxy


async def execute_in_chunks(conn: Conn, sql: str, *args: Any, chunk: int) -> int:
    """Run `sql` (an UPDATE or DELETE of at most `chunk` rows, `chunk` its last
    parameter) until it changes fewer than `chunk` rows; each run is its own short
    transaction. Returns how many rows changed in all."""
    total = 0
    while True:
        status = await conn.execute(sql, *args, chunk)
        changed = int(status.rsplit(" ", 1)[-1])
        total += changed
        if changed < chunk:
            return total


@dataclass(frozen=True, slots=True)
class Budget:
    """How long one database operation may take, and where that limit came from."""

    seconds: float
    from_deadline: bool = False

    def timed_out(self) -> ServiceError:
        """The error for running out of this budget: the caller's deadline passed
        (DEADLINE_EXCEEDED), or the database did not answer within our own bound
        (UNAVAILABLE). The one place this rule is written."""
        if self.from_deadline:
            return DeadlineExceededError("deadline exceeded while querying the database")
        return UnavailableError("the database did not answer in time")


@contextlib.asynccontextmanager
async def connection(
    pool: asyncpg.Pool, budget: Budget, status: DatabaseStatus
) -> AsyncIterator[Conn]:
    """A pooled connection for one operation within `budget`: errors translated,
    and the operation counted in `status` (answered, or left waiting).

    Refused at once (UnavailableError naming the reason) while `status` says the
    database cannot answer (schema behind this release, queries stalled): only
    operations that need the database are refused, never a call that memory
    answers."""
    status.require()
    status.begin()
    answered = False
    try:
        async with translate_errors(budget), pool.acquire(timeout=budget.seconds) as conn:
            yield conn
        answered = True
    except ServiceError as exc:
        # A refusal such as ALREADY_EXISTS is an answer; a timeout or a lost
        # connection is not.
        answered = not isinstance(exc, UnavailableError | DeadlineExceededError)
        raise
    finally:
        status.end(answered=answered)


@contextlib.asynccontextmanager
async def translate_errors(budget: Budget) -> AsyncIterator[None]:
    try:
        yield
    except (TimeoutError, asyncpg.QueryCanceledError) as exc:
        raise budget.timed_out() from exc
    except _UNAVAILABLE as exc:
        raise UnavailableError("the database is unavailable") from exc


@contextlib.asynccontextmanager
async def open_pool(settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    """The request pool (warmed up to DB_POOL_MIN_SIZE when the database answers),
    closed on exit: gracefully within the shutdown grace period (at least 1 s),
    then terminated."""
    pool = await create_pool(settings)
    try:
        await warm_up(pool, settings.pool_min_size)
        yield pool
    finally:
        try:
            await asyncio.wait_for(pool.close(), timeout=max(settings.shutdown_grace_s, 1.0))
        except Exception:
            pool.terminate()


async def create_pool(settings: Settings) -> asyncpg.Pool:
    """Create the pool without connecting: the server starts even while the database
    is down (health says NOT_SERVING) and connections are opened on demand."""
    return await asyncpg.create_pool(
        settings.database_url,
        min_size=0,
        max_size=settings.pool_max_size,
        max_inactive_connection_lifetime=300.0,
        timeout=settings.connect_timeout_s,
        command_timeout=settings.statement_timeout_ms / 1000,
        reset=_keep_session,
        server_settings={
            "application_name": "auth-service",
            "statement_timeout": str(settings.statement_timeout_ms),
            "idle_in_transaction_session_timeout": str(
                max(settings.statement_timeout_ms * 5, 10_000)
            ),
        },
    )


async def _keep_session(_conn: asyncpg.Connection) -> None:
    """Release without the default reset round trip (RESET ALL, UNLISTEN *, ...).

    Safe because pooled connections never change session state: no SET, no LISTEN
    (the relay listens on its own connection), no advisory locks, no temp tables.
    asyncpg still rolls back a transaction left open before calling this.
    """


async def warm_up(pool: asyncpg.Pool, count: int) -> None:
    """Open up to `count` connections now, so the first requests do not pay for it.
    A database that cannot be reached is not an error here: the health monitor says
    so (where and why) and the pool connects when it can."""
    if count <= 0:
        return
    conns: list[Any] = []
    try:
        for _ in range(count):
            conns.append(await pool.acquire(timeout=5.0))  # noqa: PERF401 - sequential on purpose
    except Exception:  # noqa: S110 - reported by the health monitor
        pass
    finally:
        for conn in conns:
            await pool.release(conn)
