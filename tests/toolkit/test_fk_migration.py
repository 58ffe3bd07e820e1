"""`fk-audit --emit-migration`: the emitted files applied and rolled back by the real
dbmate binary against a real downstream database."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json

import asyncpg

from auth_client.toolkit import migration as fk_migration
from auth_client.toolkit import migration_index as fk_migration_index
from auth_client.toolkit import migration_sql
from auth_client.toolkit.audit import audit
from tests.conftest import run_sync
from tests.toolkit.support import dbmate, execute, fetch, fk_snapshot, run_cli

# Columns that must be covered by a valid index once the migration has run.
NEEDS_INDEX = {
    ('"Audit Log"."Sign-ins"', ("User ID",)),
    ("content.bookmarks", ("user_id",)),
    ("content.story_close_friends", ("friend_id",)),
    ("content.story_views", ("viewer_id",)),
    ("experiments.experiment_assignments", ("user_id",)),
    ("experiments.experiment_events", ("user_id", "user_region")),
    ("experiments.experiments", ("created_by",)),
    ("messaging.conversations", ("created_by",)),
    ("messaging.messages", ("sender_id",)),
    ("streaming.streams", ("broadcaster_id",)),
}

_LEADING_INDEXES = """
SELECT i.indrelid::regclass::text AS tbl, i.indisvalid,
       ARRAY(SELECT a.attname::text FROM unnest(i.indkey::int2[]) WITH ORDINALITY k(n, o)
             JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.n ORDER BY k.o) AS cols
FROM pg_index i WHERE i.indpred IS NULL
"""


async def valid_indexes(url: str) -> set[tuple[str, tuple[str, ...]]]:
    conn = await asyncpg.connect(url, server_settings={"search_path": ""})
    try:
        rows = await conn.fetch(_LEADING_INDEXES)
    finally:
        await conn.close()
    return {(row["tbl"], tuple(row["cols"])) for row in rows if row["indisvalid"]}


def covered(indexes: set[tuple[str, tuple[str, ...]]], table: str, cols: tuple[str, ...]) -> bool:
    return any(t == table and set(c[: len(cols)]) == set(cols) for t, c in indexes)


async def fks_to_public_users(url: str) -> list[str]:
    rows = await fetch(
        url,
        "SELECT conname FROM pg_constraint"
        " WHERE contype = 'f' AND confrelid = 'public.users'::regclass",
    )
    return [row["conname"] for row in rows]


async def emit(url: str, directory, now: dt.datetime | None = None):
    conn = await asyncpg.connect(url)
    try:
        from auth_client.toolkit.audit import audit_connection  # noqa: PLC0415

        result = await audit_connection(conn)
        return await fk_migration.emit(conn, result, directory, now=now)
    finally:
        await conn.close()


def test_emitted_migration_applies_and_rolls_back_to_the_identical_constraints(
    downstream_url, tmp_path
) -> None:
    before = run_sync(fk_snapshot(downstream_url))
    indexes_before = run_sync(valid_indexes(downstream_url))
    assert all(not covered(indexes_before, t, c) for t, c in NEEDS_INDEX)
    migrations = tmp_path / "migrations"
    files = run_sync(emit(downstream_url, migrations))

    # One file per missing index (exactly one statement each), then the drop file,
    # then the inventory --check-restore reads (no tool reads it).
    assert len(files) == len(NEEDS_INDEX) + 2
    inventory = files.pop()
    assert inventory.name.startswith("auth-toolkit-fks-")
    assert files[-1].name.endswith("_drop_user_fks.sql")
    assert [p.name for p in files] == sorted(p.name for p in files)
    for path in files:
        text = path.read_text()
        assert "-- migrate:up transaction:false" in text
        assert "-- migrate:down transaction:false" in text

    up = dbmate(downstream_url, migrations, "migrate")
    assert up.returncode == 0, up.stdout + up.stderr

    assert run_sync(fks_to_public_users(downstream_url)) == []
    after_up = run_sync(fk_snapshot(downstream_url))
    # Foreign keys to other tables (experiments.users, between service tables) remain.
    assert after_up == {fk for fk in before if "REFERENCES public.users(" not in fk[2]}
    assert any("REFERENCES experiments.users(id)" in fk[2] for fk in after_up)
    indexes = run_sync(valid_indexes(downstream_url))
    missing = {(t, c) for t, c in NEEDS_INDEX if not covered(indexes, t, c)}
    assert missing == set()

    down = dbmate(downstream_url, migrations, "rollback")
    assert down.returncode == 0, down.stdout + down.stderr
    assert "drop_user_fks" in down.stdout
    assert run_sync(fk_snapshot(downstream_url)) == before

    # Applying again (the rows are still valid) works the same way.
    again = dbmate(downstream_url, migrations, "migrate")
    assert again.returncode == 0, again.stdout + again.stderr
    assert run_sync(fks_to_public_users(downstream_url)) == []


def test_rollback_with_orphans_keeps_the_constraint_not_valid_until_they_are_fixed(
    downstream_url, tmp_path
) -> None:
    before = run_sync(fk_snapshot(downstream_url))
    migrations = tmp_path / "migrations"
    run_sync(emit(downstream_url, migrations))
    # Someone dropped one constraint by hand already: IF EXISTS lets the run go on.
    run_sync(
        execute(downstream_url, "ALTER TABLE content.posts DROP CONSTRAINT posts_author_id_fkey")
    )
    up = dbmate(downstream_url, migrations, "migrate")
    assert up.returncode == 0, up.stdout + up.stderr

    # Without the FK, a message from a user unknown to public.users gets in.
    orphan = "33333333-3333-4333-8333-333333333333"
    run_sync(
        execute(downstream_url, f"INSERT INTO messaging.messages VALUES (99, 1, '{orphan}', 'x')")
    )
    down = dbmate(downstream_url, migrations, "rollback")
    assert down.returncode != 0
    assert "messages_sender_fk" in down.stdout + down.stderr
    rows = run_sync(
        fetch(
            downstream_url,
            "SELECT convalidated FROM pg_constraint WHERE conname = 'messages_sender_fk'",
        )
    )
    assert [row["convalidated"] for row in rows] == [False]  # present, checks new writes
    try:
        run_sync(
            execute(
                downstream_url, f"INSERT INTO messaging.messages VALUES (100, 1, '{orphan}', 'y')"
            )
        )
        raise AssertionError("the NOT VALID constraint must reject new orphans")
    except asyncpg.ForeignKeyViolationError:
        pass

    run_sync(execute(downstream_url, "DELETE FROM messaging.messages WHERE id = 99"))
    down = dbmate(downstream_url, migrations, "rollback")
    assert down.returncode == 0, down.stdout + down.stderr
    assert run_sync(fk_snapshot(downstream_url)) == before


def test_failed_concurrent_index_build_is_reported_not_hidden(downstream_url, tmp_path) -> None:
    migrations = tmp_path / "migrations"
    files = run_sync(emit(downstream_url, migrations))
    index_file = next(p for p in files if "streams_broadcaster" in p.name)
    # A leftover INVALID index under the planned name (a build that failed earlier).
    name = next(
        line.split()[3] for line in index_file.read_text().splitlines() if line.startswith("CREATE")
    )
    # (two streams share a broadcaster, so a unique build fails and leaves it INVALID)
    try:
        run_sync(
            execute(
                downstream_url,
                f"CREATE UNIQUE INDEX CONCURRENTLY {name} ON streaming.streams (broadcaster_id)",
            )
        )
        raise AssertionError("the unique build must fail")
    except asyncpg.UniqueViolationError:
        pass
    up = dbmate(downstream_url, migrations, "migrate")
    assert up.returncode != 0
    assert "already exists" in up.stdout + up.stderr
    assert "DROP INDEX CONCURRENTLY IF EXISTS" in index_file.read_text()


def test_versions_come_after_existing_migrations_and_names_are_unique(
    downstream_url, tmp_path
) -> None:
    migrations = tmp_path / "migrations"
    migrations.mkdir()
    (migrations / "20991231235959_later.sql").write_text("-- migrate:up\n-- migrate:down\n")
    files = run_sync(emit(downstream_url, migrations, now=dt.datetime(2026, 1, 1, tzinfo=dt.UTC)))
    assert files[0].name.startswith("21000101000000_")
    # A relation already using a planned index name gets a different name.
    result = run_sync(audit(downstream_url))
    taken = {("streaming", "streams_broadcaster_id_idx")}
    planned = fk_migration.plan_files(
        result, now=dt.datetime(2026, 1, 1, tzinfo=dt.UTC), taken=taken, existing_versions=set()
    )
    streams = next(f for f in planned if "streams_broadcaster" in f.name)
    assert '"streams_broadcaster_id_idx"' not in streams.text
    assert "streams_broadcaster_id_" in streams.text


def test_no_foreign_keys_writes_nothing(new_database, tmp_path) -> None:
    url = new_database()
    assert run_sync(emit(url, tmp_path / "m")) == []


async def test_cli_emit_migration_json(downstream_url, tmp_path) -> None:
    out_dir = tmp_path / "out"
    code, out, err = await run_cli(
        "fk-audit",
        "--database-url",
        downstream_url,
        "--format",
        "json",
        "--emit-migration",
        str(out_dir),
    )
    assert code == 0, err
    data = json.loads(out)
    written = data["migration_files"]
    assert len(written) == data["missing_indexes"] + 2  # + drop file + inventory
    assert sorted(p.name for p in out_dir.iterdir()) == sorted(p.rsplit("/", 1)[1] for p in written)


def test_sql_quoting_helpers() -> None:
    assert migration_sql.quote_literal("it's") == "'it''s'"
    assert migration_sql.quote_literal("a\\b'") == "E'a\\\\b'''"
    assert migration_sql.quote_ident('we"ird') == '"we""ird"'


def test_long_index_names_fit_postgres_identifier_limit(downstream_url) -> None:
    result = run_sync(audit(downstream_url))
    fk = next(fk for fk in result.foreign_keys if fk.table == "streams")
    long_fk = dataclasses.replace(fk, table="s" * 60 + "é", columns=("c" * 50,))
    taken: set[tuple[str, str]] = set()
    first = fk_migration_index.index_name(long_fk, taken)
    second = fk_migration_index.index_name(long_fk, taken)
    assert len(first.encode()) <= 63
    assert len(second.encode()) <= 63
    assert first != second
