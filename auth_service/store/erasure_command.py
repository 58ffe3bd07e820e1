"""`auth-service erase-deleted`: the one-off erasure of deleted users' personal data
that is due, e.g. of users deleted before erasure existed. Idempotent: a second run
finds nothing to do."""

from __future__ import annotations

import asyncpg

from auth_service.store.connection import describe
from auth_service.store.erasure import erase_due, pending


class EraseError(RuntimeError):
    """The erasure could not run; the message says why in one line."""


async def run(database_url: str, *, retention_s: float, batch: int) -> int:
    if batch < 1:
        raise EraseError("--batch-size must be at least 1")
    try:
        conn = await asyncpg.connect(database_url, timeout=10)
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise EraseError(describe(database_url, exc)) from exc
    try:
        erased = await erase_due(conn, retention_s, batch)
        left = await pending(conn, retention_s)
    except asyncpg.UndefinedColumnError as exc:
        raise EraseError("the database schema is behind: run `auth-service migrate`") from exc
    finally:
        await conn.close()
    print(  # noqa: T201
        f"erased the personal data of {erased} deleted user(s); "
        f"{left.rows} still within PII_RETENTION_S ({retention_s:g}s)"
    )
    return 0
