"""The examples' service database: connect (creating the database on first use),
and one clear error when it cannot be reached. Shared by messaging_add_member.py
and content_create_post.py."""

from __future__ import annotations

import urllib.parse

import asyncpg

# The examples' exit status when the service's own database cannot be reached
# (documented in each example and examples/README.md).
EXIT_DATABASE_UNAVAILABLE = 4


class DatabaseUnavailableError(RuntimeError):
    """The service database cannot be reached; the message says why in one line
    (never the URL, which may hold a password)."""


async def _connect(database_url: str) -> asyncpg.Connection:
    try:
        return await asyncpg.connect(database_url, timeout=10)
    except asyncpg.InvalidCatalogNameError:
        raise
    except (
        OSError,
        TimeoutError,
        ValueError,
        asyncpg.PostgresError,
        asyncpg.InterfaceError,
    ) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DatabaseUnavailableError(f"cannot reach the database: {reason}") from exc


async def connect_creating(database_url: str) -> asyncpg.Connection:
    """Connect to the service's database, creating it on first use."""
    try:
        return await _connect(database_url)
    except asyncpg.InvalidCatalogNameError:
        parts = urllib.parse.urlsplit(database_url)
        name = parts.path.lstrip("/")
        admin = await _connect(urllib.parse.urlunsplit(parts._replace(path="/postgres")))
        try:
            await admin.execute(f'CREATE DATABASE "{name}"')
        except asyncpg.DuplicateDatabaseError:
            pass  # created concurrently
        finally:
            await admin.close()
        return await _connect(database_url)
