"""`auth-toolkit rehearse` (issue #28): the playbook on a copy of the modelled
downstream database (downstream.sql: NOT NULL author columns, CASCADE chains,
soft-delete and legacy-flag tables, composite, MATCH FULL and deferrable keys, a
NOT VALID one, a partitioned table) with planted orphans of a real auth-service,
while a second session keeps writing to the source; then the real golang-migrate
CLI on the same; then what it refuses. Short --duration: each run is seconds."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import shutil
import signal
from pathlib import Path

import asyncpg
import pytest

from auth_client.toolkit.cli import main
from tests.conftest import eventually
from tests.go_tools import GOLANG_MIGRATE, go_binary
from tests.toolkit.support import (
    TOOLKIT,
    Platform,
    execute,
    fetch,
    fk_snapshot,
    png_size,
    row_snapshot,
    run_cli,
)

STEPS = [
    "baseline", "indexes", "drop", "window", "reconcile", "check-restore", "rollback", "verify",
]  # fmt: skip
# Live rows of users deleted in auth-service or never created there (support.plant).
PLANTED = {
    "messaging.conversations": 1,
    "messaging.conversation_participants": 1,
    "messaging.messages": 3,
    "content.posts": 1,
    "content.comments": 1,
    "messaging_eu.conversations": 1,
}
WRITER_IDS = 1_000_000  # messages the second session writes to the source from here


async def more_rows(p: Platform) -> None:
    """Rows in the composite, deferrable and partitioned tables too (active users)."""
    a = p.active
    await execute(
        p.url,
        f"""
        INSERT INTO content.stories VALUES (1, '{a[0]}'), (2, '{a[1]}'), (3, '{a[2]}');
        INSERT INTO content.story_views VALUES (1, '{a[3]}'), (2, '{a[4]}');
        INSERT INTO content.post_shares
            SELECT g, g, 'eu', '{a[5]}' FROM generate_series(1, 5) g;
        INSERT INTO experiments.experiment_events
            SELECT g, '2026-06-01', '{a[6]}', 'eu' FROM generate_series(1, 5) g;
        """,
    )


@contextlib.asynccontextmanager
async def writing_to(url: str, sender: str):
    """A second session inserting messages into the source until the block ends."""
    written: list[int] = []
    stop = asyncio.Event()

    async def write() -> None:
        conn = await asyncpg.connect(url)
        try:
            while not stop.is_set():
                msg_id = WRITER_IDS + len(written)
                await conn.execute(
                    "INSERT INTO messaging.messages (id, conversation_id, sender_id, body)"
                    " VALUES ($1, 2, $2, 'from the service')",
                    msg_id,
                    sender,
                )
                written.append(msg_id)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 0.02)
        finally:
            await conn.close()

    task = asyncio.create_task(write())
    try:
        yield written
    finally:
        stop.set()
        await task


async def databases(url: str) -> set[str]:
    return {r["datname"] for r in await fetch(url, "SELECT datname FROM pg_database")}


async def rehearse(p: Platform, *args: str) -> tuple[int, dict, str]:
    code, out, err = await run_cli(
        "rehearse", "--database-url", p.url, "--target", p.target, "--duration", "1",
        "--write-rate", "60", "--read-rate", "30", "--reconcile-rate", "0",
        "--max-write-p99-ms", "10000", "--format", "json", *args,
        timeout=240,
    )  # fmt: skip
    assert code in (0, 3), out + err
    return code, json.loads(out), err


@pytest.mark.slow
async def test_rehearsal_on_a_copy_under_writes_finds_the_orphans_and_judges_each_table(
    platform: Platform, tmp_path: Path
) -> None:
    await more_rows(platform)
    url = platform.url
    fks_before, rows_before = await fk_snapshot(url), await row_snapshot(url)
    dbs_before = await databases(url)
    timeline = tmp_path / "timeline.png"
    async with writing_to(url, platform.active[0]) as written:
        code, report, err = await rehearse(
            platform, "--unknown-share", "0.3", "--timeline", str(timeline)
        )
    assert len(written) > 20  # the source took writes throughout

    # The source: constraints as they were, every row as it was plus the writer's.
    assert report["source_unchanged"] is True
    assert await fk_snapshot(url) == fks_before
    rows_after = await row_snapshot(url)
    new = set(rows_after["messaging.messages"]) - set(rows_before["messaging.messages"])
    assert {int(r[0]) for r in new} == set(written)
    rows_after["messaging.messages"] = sorted(set(rows_after["messaging.messages"]) - new)
    assert rows_after == rows_before
    # The copy is gone.
    assert report["scratch_kept"] is False
    assert report["scratch_database"] not in await databases(url)
    assert await databases(url) == dbs_before

    # Every step ran and was measured, in the playbook's order.
    steps = {s["name"]: s for s in report["steps"]}
    assert [s["name"] for s in report["steps"]] == STEPS
    assert all(s["ok"] for s in report["steps"] if s["name"] != "rollback"), report["steps"]
    # The rollback fails as the tool reports it: every constraint back, some NOT VALID.
    assert "every constraint is back, but not all are valid" in steps["rollback"]["error"]
    for step in report["steps"]:
        assert isinstance(step["lock_wait_ms_max"], float | int)
        assert step["write_p99_ms"] is None or step["write_p99_ms"] >= 0
    assert steps["baseline"]["writes"] > 20
    assert steps["baseline"]["write_errors"] == 0
    # Unknown users: rejected by the constraints before the drop, let in after it.
    assert steps["baseline"]["writes_rejected_by_fk"] > 0
    assert steps["window"]["writes_rejected_by_fk"] == 0

    tables = {t["table"]: t for t in report["tables"]}
    audited = {r["t"] for r in await fetch(url, AUDITED)}
    assert set(tables) == audited
    for name, table in tables.items():
        assert table["verdict"] in ("go", "no-go"), name
        assert table["reason"], name
        assert isinstance(table["orphans"], int)
        assert isinstance(table["rollback_ok"], bool)
        assert table["orphans"] == table["orphans_existing"] + table["orphans_created"]
        assert table["orphans_existing"] == PLANTED.get(name, 0), name
        if not table["rollback_ok"]:
            assert table["verdict"] == "no-go"
            assert "NOT VALID" in table["reason"], table
    # Rows written for unknown users while the constraints were gone make their
    # rollback fail validation: the rehearsal says so, and exits 3.
    assert sum(t["orphans_created"] for t in tables.values()) > 0
    assert any(not t["rollback_ok"] for t in tables.values())
    assert code == 3
    assert report["go"] is False
    assert report["constraints_identical"] is False
    # What reconcile --action delete would cascade to: the conversation of a
    # deleted user takes its messages and participants with it.
    cascades = tables["messaging.conversations"]["cascades"]["created_by:delete"]["tables"]
    assert cascades["messaging.messages"]["deleted"] >= 25

    assert png_size(timeline) == (1100, 480)
    assert report["timeline_png"] == str(timeline)
    assert "drop: done" in err


AUDITED = (
    "SELECT DISTINCT format('%I.%I', n.nspname, t.relname) AS t FROM pg_constraint c"
    " JOIN pg_class t ON t.oid = c.conrelid JOIN pg_namespace n ON n.oid = t.relnamespace"
    " WHERE c.contype = 'f' AND c.confrelid = 'public.users'::regclass AND c.conparentid = 0"
)


@pytest.mark.slow
async def test_golang_migrate_rehearsal_with_the_real_cli_is_a_go(
    platform: Platform, tmp_path: Path
) -> None:
    """The real golang-migrate applies and reverts the files; with no writes for
    unknown users every rollback validates and every table is a go (exit 0);
    --keep leaves the copy for inspection."""
    migrate = await asyncio.to_thread(go_binary, *GOLANG_MIGRATE)
    await more_rows(platform)
    code, report, _ = await rehearse(
        platform, "--migration-format", "golang-migrate", "--migration-tool", str(migrate),
        "--unknown-share", "0", "--keep", "--timeline", str(tmp_path / "t.png"),
    )  # fmt: skip
    scratch = report["scratch_database"]
    try:
        assert code == 0, [t["reason"] for t in report["tables"] if t["verdict"] != "go"]
        assert report["go"] is True
        assert report["constraints_identical"] is True
        assert all(t["rollback_ok"] and t["verdict"] == "go" for t in report["tables"])
        assert all(t["orphans_created"] == 0 for t in report["tables"])
        assert report["scratch_kept"] is True
        copy_url = platform.url.rsplit("/", 1)[0] + "/" + scratch
        history = await fetch(copy_url, "SELECT version, dirty FROM auth_toolkit_rehearsal")
        assert [r["dirty"] for r in history] == [False]
        assert await fk_snapshot(copy_url) == await fk_snapshot(platform.url)
        kept_files = [p.name for p in Path(report["notes"][0].split()[-1]).glob("*.sql")]
        assert any(name.endswith("_drop_user_fks.up.sql") for name in kept_files), kept_files
    finally:
        await execute(platform.url, f'DROP DATABASE IF EXISTS "{scratch}" WITH (FORCE)')
        kept = [n.removeprefix("the migrations rehearsed are in ") for n in report["notes"]]
        for directory in kept:
            shutil.rmtree(directory, ignore_errors=True)
    assert len(kept) == 1


async def test_a_role_that_may_not_create_databases_is_refused_before_anything(
    downstream_url: str, tmp_path: Path
) -> None:
    role = "rehearse_no_createdb"
    await execute(downstream_url, f"DROP ROLE IF EXISTS {role}; CREATE ROLE {role} LOGIN")
    try:
        head, _, db = downstream_url.rpartition("/")
        scheme, _, rest = head.partition("://")
        url = f"{scheme}://{role}@{rest.rpartition('@')[2]}/{db}"
        before = await databases(downstream_url)
        code, out, err = await run_cli(
            "rehearse", "--database-url", url, "--target", "127.0.0.1:1",
            "--timeline", str(tmp_path / "t.png"),
        )  # fmt: skip
        assert code == 1, out + err
        assert f"role {role} may not create databases" in err
        assert await databases(downstream_url) == before
        assert not (tmp_path / "t.png").exists()
    finally:
        await execute(downstream_url, f"DROP ROLE IF EXISTS {role}")


async def test_missing_pg_dump_is_refused_in_one_line(downstream_url: str, tmp_path: Path) -> None:
    code, out, err = await run_cli(
        "rehearse", "--database-url", downstream_url, "--target", "127.0.0.1:1",
        "--pg-bin", str(tmp_path),
    )  # fmt: skip
    assert code == 1, out + err
    assert err.strip() == f"auth-toolkit: --pg-bin {tmp_path}: no pg_dump and pg_restore there"


async def test_a_lock_held_on_the_copy_is_waited_out_and_each_retry_counted(
    platform: Platform, tmp_path: Path
) -> None:
    """A session holding a lock on a table of the copy (a long query, as in
    production) makes the drop wait `--lock-timeout`, pause and retry: the drop step
    reports its lock wait, the lock timeouts and the retries. The lock is let go
    once the migration has been seen pausing between attempts (pg_sleep)."""
    proc = await asyncio.create_subprocess_exec(
        TOOLKIT, "rehearse", "--database-url", platform.url, "--target", platform.target,
        "--schema", "messaging_eu", "--duration", "1", "--write-rate", "40",
        "--reconcile-rate", "0", "--lock-timeout", "200ms", "--lock-retries", "20",
        "--max-write-p99-ms", "100000", "--format", "json",
        "--timeline", str(tmp_path / "t.png"),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None
    assert proc.stderr is not None
    holder, lines = None, []
    try:
        async with asyncio.timeout(180):
            while line := (await proc.stderr.readline()).decode():
                lines.append(line)
                if "copied into " in line:
                    copy_url = platform.url.rsplit("/", 1)[0] + "/" + line.split()[-4]
                if "baseline ..." in line:
                    holder = await asyncpg.connect(copy_url)
                    await holder.execute("BEGIN; LOCK messaging_eu.messages IN ACCESS SHARE MODE")
                if "drop ..." in line:
                    assert holder is not None
                    await eventually(functools.partial(pausing, copy_url), timeout=60)
                    await holder.close()
            out = await proc.stdout.read()
            await proc.wait()
    finally:
        if holder is not None and not holder.is_closed():
            await holder.close()
    assert proc.returncode in (0, 3), "".join(lines)
    drop = next(s for s in json.loads(out)["steps"] if s["name"] == "drop")
    assert drop["ok"] is True, drop
    assert drop["retries"] >= 1
    assert drop["lock_timeouts"] == drop["retries"]
    assert drop["tool_lock_wait_ms_max"] > 0
    assert drop["lock_wait_ms_max"] >= drop["tool_lock_wait_ms_max"]


async def pausing(url: str) -> bool:
    """The migration tool's session is in the pause between two attempts."""
    rows = await fetch(
        url,
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
        " AND wait_event = 'PgSleep' AND application_name NOT LIKE 'auth-toolkit%'",
    )
    return bool(rows)


async def test_an_interrupted_rehearsal_drops_its_copy(platform: Platform, tmp_path: Path) -> None:
    """Ctrl-C (SIGINT) during the load: exit 130, and the scratch database is gone."""
    before = await databases(platform.url)
    proc = await asyncio.create_subprocess_exec(
        TOOLKIT, "rehearse", "--database-url", platform.url, "--target", platform.target,
        "--schema", "messaging_eu", "--duration", "600", "--timeline", str(tmp_path / "t.png"),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stderr is not None
    lines = []
    async with asyncio.timeout(120):
        while line := (await proc.stderr.readline()).decode():
            lines.append(line)
            if "baseline ..." in line:
                assert await databases(platform.url) != before  # the copy exists
                proc.send_signal(signal.SIGINT)
        await proc.wait()
    assert proc.returncode == 130, "".join(lines)
    assert lines[-1] == "auth-toolkit: interrupted\n"
    assert await databases(platform.url) == before


async def test_an_auth_service_that_knows_none_of_the_users_is_refused(
    server, downstream_url: str, tmp_path: Path
) -> None:
    """--target naming the wrong (here: an empty) auth-service: every user would be
    unknown, so the rehearsal says so and stops; the copy is dropped."""
    before = await databases(downstream_url)
    code, out, err = await run_cli(
        "rehearse", "--database-url", downstream_url, "--target", server.address,
        "--duration", "1", "--timeline", str(tmp_path / "t.png"),
    )  # fmt: skip
    assert code == 1, out + err
    assert err.splitlines()[-1] == (
        "auth-toolkit: none of the 3 users sampled from public.users is active in auth-service:"
        " is --target the right auth-service? The load writes rows for active users"
    )
    assert await databases(downstream_url) == before


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--unknown-share", "2"], "--unknown-share must be between 0 and 1"),
        (["--duration", "0"], "--duration must be above 0 seconds"),
        (["--write-rate", "0"], "--write-rate must be above 0"),
        (["--lock-timeout", "soon"], "--lock-timeout must look like 500ms, 5s or 1min"),
    ],
)
def test_bad_rehearsal_options_are_usage_errors(
    flags: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    url = "postgresql://u@127.0.0.1:1/x"
    assert main(["rehearse", "--database-url", url, "--target", "127.0.0.1:1", *flags]) == 2
    assert message in capsys.readouterr().err


def test_rehearse_needs_an_auth_service(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AUTH_SERVICE_TARGET", raising=False)
    assert main(["rehearse", "--database-url", "postgresql://u@127.0.0.1:1/x"]) == 2
    assert "--target HOST:PORT (or AUTH_SERVICE_TARGET)" in capsys.readouterr().err
