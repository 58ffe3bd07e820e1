"""`auth-service migrate` with the real dbmate binary against a real PostgreSQL."""

from __future__ import annotations

import subprocess
import sys

import asyncpg

from auth_service.local.embedded import EmbeddedPostgres, free_port
from tests.conftest import run_sync


def _migrate(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "auth_service", "migrate", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )


async def _tables(url: str) -> set[str]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        return {r[0] for r in rows}
    finally:
        await conn.close()


def test_migrate_applies_then_second_run_is_a_noop(private_postgres: EmbeddedPostgres) -> None:
    # private_postgres is migrated already: running again must change nothing.
    before = run_sync(_tables(private_postgres.url))
    assert {"users", "schema_migrations"} <= before
    result = _migrate("--database-url", private_postgres.url)
    assert result.returncode == 0, result.stderr
    assert "Applying" not in result.stdout
    assert run_sync(_tables(private_postgres.url)) == before


def test_migrate_fresh_database_creates_schema(pg_admin_url: str) -> None:
    name = "migrate_fresh_test"

    async def recreate() -> None:
        conn = await asyncpg.connect(pg_admin_url)
        await conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await conn.execute(f"CREATE DATABASE {name}")
        await conn.close()

    run_sync(recreate())
    url = pg_admin_url.rsplit("/", 1)[0] + f"/{name}"
    result = _migrate("--database-url", url)
    assert result.returncode == 0, result.stderr
    assert "Applying" in result.stdout
    assert "users" in run_sync(_tables(url))


def test_unreachable_database_fails_with_one_clear_line() -> None:
    url = f"postgresql://postgres:s3cret-pw@127.0.0.1:{free_port()}/auth"
    result = _migrate("--database-url", url)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "migration failed" in lines[0]
    assert "connection refused" in lines[0]
    assert "s3cret-pw" not in result.stderr


def test_malformed_url_fails_clearly() -> None:
    result = _migrate("--database-url", "mysql://nope")
    assert result.returncode == 1
    assert "postgres://" in result.stderr


def test_missing_url_names_the_variable() -> None:
    env = {k: v for k, v in __import__("os").environ.items() if k != "DATABASE_URL"}
    result = _migrate(env=env)
    assert result.returncode == 2
    assert "DATABASE_URL" in result.stderr


def test_failing_migration_exits_nonzero_and_says_why(pg_admin_url: str) -> None:
    name = "migrate_conflict_test"

    async def prepare() -> None:
        conn = await asyncpg.connect(pg_admin_url)
        await conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await conn.execute(f"CREATE DATABASE {name}")
        await conn.close()
        db = await asyncpg.connect(pg_admin_url.rsplit("/", 1)[0] + f"/{name}")
        # A hand-made users table the first migration collides with.
        await db.execute("CREATE TABLE users (id int)")
        await db.close()

    run_sync(prepare())
    url = pg_admin_url.rsplit("/", 1)[0] + f"/{name}"
    result = _migrate("--database-url", url)
    assert result.returncode == 1
    assert "migration failed" in result.stderr
    assert "already exists" in result.stderr
