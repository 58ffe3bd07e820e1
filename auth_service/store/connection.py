"""Saying where a database is and why it cannot be reached, in one line an operator
can act on: `PostgreSQL at db.internal:5432 (database auth, user auth): connection
refused`. Never the password."""

from __future__ import annotations

import socket
import urllib.parse

import asyncpg


def where(database_url: str) -> str:
    """`PostgreSQL at HOST:PORT (database D, user U)` for a URL (no password)."""
    parts = urllib.parse.urlsplit(database_url)
    query = dict(urllib.parse.parse_qsl(parts.query))
    host = parts.hostname or query.get("host") or "localhost"
    try:
        port = parts.port or int(query.get("port") or 5432)
    except ValueError:
        port = 5432
    database = parts.path.lstrip("/") or query.get("dbname") or parts.username or "postgres"
    user = parts.username or query.get("user")
    who = f", user {user}" if user else ""
    shown = f"[{host}]" if ":" in host else host
    return f"PostgreSQL at {shown}:{port} (database {database}{who})"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else ""


def reason(exc: BaseException) -> str:
    """Why talking to the database failed (connecting, or a query), in a few words:
    never empty, even for exceptions without a message (a timeout)."""
    if isinstance(exc, TimeoutError):
        text = "no answer (timed out)"
    elif isinstance(exc, socket.gaierror):
        text = "host name not found"
    elif isinstance(exc, ConnectionRefusedError) or (
        isinstance(exc, OSError) and "refused" in str(exc).lower()
    ):
        text = "connection refused"
    elif isinstance(exc, asyncpg.PostgresError):
        text = _first_line(exc) or type(exc).__name__
    elif isinstance(exc, OSError):
        text = exc.strerror or _first_line(exc) or type(exc).__name__
    else:
        text = f"{type(exc).__name__}: {_first_line(exc)}".rstrip(": ")
    return text


# Failures of getting a session at all (as opposed to a query failing on one).
_CONNECTING: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InvalidCatalogNameError,
    asyncpg.InvalidAuthorizationSpecificationError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.InterfaceError,
)


def describe(database_url: str, exc: BaseException) -> str:
    """`cannot connect to PostgreSQL at H:P (database D, user U): REASON`, or
    `PostgreSQL at ...: REASON` for a failure once connected."""
    if isinstance(exc, _CONNECTING):
        return f"cannot connect to {where(database_url)}: {reason(exc)}"
    return f"{where(database_url)}: {reason(exc)}"


class UnreachableError(RuntimeError):
    """The database cannot be reached; the message says where and why in one line."""


async def check_reachable(database_url: str, timeout: float) -> None:
    """Open and close one connection; UnreachableError (one line) when that fails."""
    try:
        conn = await asyncpg.connect(database_url, timeout=timeout)
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise UnreachableError(describe(database_url, exc)) from exc
    await conn.close()
