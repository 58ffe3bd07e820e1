"""What a DBA would stop `auth-toolkit reconcile` for (issue #13, items 1, 2, 7, 8):
a wrong target, hidden cascades, soft-deleted rows, and how a run ends. Every test
runs the installed command against a real auth-service (users created and deleted
through its admin API) and the modelled downstream database (tests/toolkit/
downstream.sql: several services in one database, NOT NULL + NO ACTION keys, CASCADE
chains, soft-delete and legacy boolean-delete tables, a per-service schema copy)."""

from __future__ import annotations

import asyncio
import json
import signal

from auth_service.api.server import AuthServer
from tests.conftest import ADMIN_TOKEN, make_settings
from tests.toolkit.support import TOOLKIT, Platform, execute, fetch, row_snapshot, run_cli


async def reconcile(p: Platform, table: str, column: str, *args: str, target: str | None = None):
    code, out, err = await run_cli(
        "reconcile", "--database-url", p.url, "--table", table, "--column", column,
        "--target", target or p.target, "--token", ADMIN_TOKEN, "--rate", "0",
        "--format", "json", *args,
    )  # fmt: skip
    return code, (json.loads(out) if out.strip() else None), err


async def test_guard_refuses_an_action_against_an_empty_auth_service(
    platform: Platform, new_database
) -> None:
    """Item 1: an auth-service whose database is empty makes every row an orphan; the
    action refuses before changing anything (exit 3, one line saying why and how to
    override), and a dry run reports the fraction."""
    before = await row_snapshot(platform.url)
    async with AuthServer(make_settings(new_database())) as empty:
        code, report, err = await reconcile(
            platform, "content.comments", "author_id", "--action", "delete", target=empty.address
        )
        assert code == 3, err
        refusals = [
            line for line in err.splitlines() if "refused:" in line and "auth-toolkit" in line
        ]
        assert len(refusals) == 1, err
        assert "--max-orphan-fraction" in refusals[0]
        assert "Nothing was changed" in refusals[0]
        assert report["status"] == "refused"
        assert report["rows_fixed"] == 0
        assert report["orphan_fraction"] == 1.0
        assert await row_snapshot(platform.url) == before  # row for row

        code, report, err = await reconcile(
            platform, "content.comments", "author_id", target=empty.address
        )
        assert code == 0, err
        assert report["dry_run"] is True
        assert report["orphan_fraction"] == 1.0
    # Against the right auth-service the same action goes ahead: 1 live orphan row
    # of 33 (the flagged one is already soft-deleted and left alone).
    code, report, err = await reconcile(
        platform, "content.comments", "author_id", "--action", "delete"
    )
    assert code == 0, err
    assert report["orphans"]["rows"] == 1
    assert report["orphan_fraction"] < 0.05
    assert report["rows_fixed_by_table"] == {"content.comments": 1}


async def test_cascades_are_reported_refused_and_counted_when_allowed(platform: Platform) -> None:
    """Item 2: deleting the one orphan conversation also deletes its 25 messages and
    3 participants (ON DELETE CASCADE between service tables). The dry run and the
    JSON say so per table; --action delete refuses without --allow-cascade, changing
    nothing; with it, rows fixed counts what really changed, per table."""
    expected = {
        "messaging.conversations": {"deleted": 1},
        "messaging.messages": {"deleted": 25},
        "messaging.conversation_participants": {"deleted": 3},
    }
    before = await row_snapshot(platform.url)
    code, report, err = await reconcile(platform, "messaging.conversations", "created_by")
    assert code == 0, err
    assert report["cascades"]["delete"]["tables"] == expected
    assert report["cascades"]["delete"]["other_rows"] == 28
    assert report["cascades"]["set-null"]["tables"] == {"messaging.conversations": {"updated": 1}}
    code, report, err = await reconcile(
        platform, "messaging.conversations", "created_by", "--action", "delete"
    )
    assert code == 3, err
    assert "--allow-cascade" in err
    assert "messaging.messages (25 deleted)" in err
    assert await row_snapshot(platform.url) == before  # row for row

    code, report, err = await reconcile(
        platform, "messaging.conversations", "created_by", "--action", "delete", "--allow-cascade"
    )
    assert code == 0, err
    assert report["rows_fixed"] == 29
    assert report["rows_fixed_by_table"] == {t: c["deleted"] for t, c in expected.items()}
    gone = await fetch(
        platform.url, "SELECT count(*) FROM messaging.messages WHERE conversation_id = 1"
    )
    assert gone[0][0] == 0


async def test_rows_that_reference_an_orphan_through_restrict_block_the_delete(
    platform: Platform,
) -> None:
    """Item 2: a row that references an orphan through NO ACTION / RESTRICT would make
    the DELETE fail half-way. The dry run counts it as `blocked`, and the action
    refuses before changing anything (exit 3, the table named), even with
    --allow-cascade. Post 31 is the orphan (its author never existed); one report
    points at it, one at a live post."""
    await execute(
        platform.url,
        "CREATE TABLE content.post_reports ("
        " id bigint PRIMARY KEY,"
        " post_id bigint NOT NULL REFERENCES content.posts ON DELETE RESTRICT);"
        " INSERT INTO content.post_reports VALUES (1, 31), (2, 1)",
    )
    code, report, err = await reconcile(platform, "content.posts", "author_id")
    assert code == 0, err
    assert report["cascades"]["delete"]["blocked"] == {"content.post_reports": 1}
    before = await row_snapshot(platform.url)
    code, report, err = await reconcile(
        platform, "content.posts", "author_id", "--action", "delete", "--allow-cascade"
    )
    assert code == 3, err
    assert "content.post_reports (1)" in err
    assert "NO ACTION / RESTRICT" in err
    assert report["rows_fixed"] == 0
    assert await row_snapshot(platform.url) == before  # row for row
    # With the report gone, the delete goes ahead (and takes its comments along).
    await execute(platform.url, "DELETE FROM content.post_reports WHERE post_id = 31")
    code, report, err = await reconcile(
        platform, "content.posts", "author_id", "--action", "delete", "--allow-cascade"
    )
    assert code == 0, err
    assert report["rows_fixed_by_table"]["content.posts"] == 1


async def test_what_an_action_may_do_and_soft_deleted_rows_apart(platform: Platform) -> None:
    """Item 7: the audit reports NOT NULL, the soft-delete column and the actions that
    apply; set-null is refused naming them; rows already soft-deleted are reported
    apart and never counted as orphans to fix, so the orphan count can reach zero."""
    code, out, err = await run_cli("fk-audit", "--database-url", platform.url, "--format", "json")
    assert code == 0, err
    fks = {
        (fk["schema"], fk["table"], tuple(fk["columns"])): fk
        for fk in json.loads(out)["foreign_keys"]
    }
    messages = fks["messaging", "messages", ("sender_id",)]
    assert (messages["not_null"], messages["soft_delete"]) == (True, "deleted_at")
    assert messages["actions"] == ["delete", "soft-delete"]
    comments = fks["content", "comments", ("author_id",)]
    assert (comments["soft_delete"], comments["soft_delete_type"]) == ("is_deleted", "boolean")
    assert comments["actions"] == ["delete"]
    conversations = fks["messaging", "conversations", ("created_by",)]
    assert (conversations["not_null"], conversations["actions"]) == (False, ["delete", "set-null"])
    code, table, _ = await run_cli("fk-audit", "--database-url", platform.url)
    assert "is_deleted (legacy boolean)" in table
    assert "SOFT DELETE" in table

    before = await row_snapshot(platform.url)
    code, _, err = await reconcile(
        platform, "messaging.messages", "sender_id", "--action", "set-null"
    )
    assert code == 1
    assert "the column is NOT NULL (actions that apply: delete, soft-delete)" in err
    assert await row_snapshot(platform.url) == before

    code, report, err = await reconcile(platform, "messaging.messages", "sender_id")
    assert code == 0, err
    assert report["orphans"] == {"total": 1, "deleted": 1, "not_found": 0, "rows": 3}
    assert report["soft_deleted"] == {"ids": 1, "rows": 3}
    code, report, err = await reconcile(
        platform, "messaging.messages", "sender_id", "--action", "soft-delete"
    )
    assert code == 0, err
    assert report["rows_fixed_by_table"] == {"messaging.messages": 3}
    code, report, err = await reconcile(platform, "messaging.messages", "sender_id")
    assert report["orphans"]["total"] == 0  # the "orphans near zero" alert clears
    assert report["soft_deleted"] == {"ids": 2, "rows": 6}
    kept = await fetch(
        platform.url, "SELECT count(*) FROM messaging.messages WHERE deleted_at = '2020-01-01'"
    )
    assert kept[0][0] == 3  # earlier soft-deletes keep their time

    code, report, err = await reconcile(platform, "content.comments", "author_id")
    assert report["orphans"]["rows"] == 1  # the flagged comment is apart
    assert report["soft_deleted"] == {"ids": 0, "rows": 1}


async def test_max_batches_exits_stopped_not_done(platform: Platform, tmp_path) -> None:
    """Item 8: a run stopped by --max-batches exits 4 and says "stopped"; the state
    file continues it to "done" (exit 0)."""
    state = str(tmp_path / "state.json")
    args = ("--batch-size", "5", "--state-file", state)
    code, report, err = await reconcile(
        platform, "messaging.messages", "sender_id", *args, "--max-batches", "2"
    )
    assert code == 4, err
    assert report["status"] == "stopped"
    assert report["stopped"] == "max-batches"
    assert "stopped (max-batches) before the end" in err
    assert "done:" not in err
    code, report, err = await reconcile(platform, "messaging.messages", "sender_id", *args)
    assert code == 0, err
    assert report["status"] == "done"
    assert "reconcile: done:" in err


async def test_interrupt_exits_130_and_says_stopped(platform: Platform) -> None:
    """Item 8: SIGINT mid-run exits 130 and reports where it stopped."""
    # One id per batch, one batch per 5 s: the signal lands while the run waits for
    # its second batch. (At 2 batches/s the table's four ids took 1.5 s, and on a
    # loaded machine the run could finish before the signal arrived.)
    proc = await asyncio.create_subprocess_exec(
        TOOLKIT, "reconcile", "--database-url", platform.url, "--table", "messaging.messages",
        "--column", "sender_id", "--target", platform.target, "--batch-size", "1",
        "--rate", "0.2", "--format", "json",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stderr is not None
    first = await asyncio.wait_for(proc.stderr.readline(), 30)
    assert b"reconcile:" in first
    proc.send_signal(signal.SIGINT)
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 130, err
    report = json.loads(out)
    assert (report["status"], report["stopped"]) == ("stopped", "interrupted")
    assert b"stopped (interrupted) before the end" in err


async def test_help_lists_the_exit_codes() -> None:
    for command in ("reconcile", "fk-audit"):
        code, out, _ = await run_cli(command, "--help")
        assert code == 0
        assert "exit codes: 0 done, 1 failed, 2 usage error, 3 " in " ".join(out.split())
    code, out, _ = await run_cli("reconcile", "--help")
    assert "4 stopped at --max-batches, 130 interrupted" in " ".join(out.split())


async def test_report_only_run_says_dry_run(platform: Platform) -> None:
    """Issue #12 item 8: a run without --action is a dry run, and the JSON says so."""
    code, report, err = await reconcile(platform, "content.posts", "author_id")
    assert code == 0, err
    assert (report["action"], report["dry_run"]) == (None, True)
