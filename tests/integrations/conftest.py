"""Fixtures of the ORM integration tests: a service database of the test's own (the
tables a service keeps, not auth-service's) on the session's PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tests.conftest import _admin, _with_database, run_sync


@pytest.fixture
def service_db(pg_admin_url: str) -> Iterator[str]:
    """URL (postgresql://) of a fresh, empty database for the service's tables."""
    name = f"t_orm_{uuid.uuid4().hex[:12]}"
    run_sync(_admin(pg_admin_url, f"CREATE DATABASE {name}"))
    yield _with_database(pg_admin_url, name)
    run_sync(_admin(pg_admin_url, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))


def driver_url(url: str, driver: str) -> str:
    """`url` for SQLAlchemy's `driver` (psycopg, asyncpg)."""
    return url.replace("postgresql://", f"postgresql+{driver}://", 1)
