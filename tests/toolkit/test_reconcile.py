"""`auth-toolkit reconcile` against a real auth-service (users created and deleted
through the admin API) and a real downstream database with planted orphans."""

from __future__ import annotations

import io
import json
import uuid
from dataclasses import dataclass

import asyncpg
import pytest

from auth_client.toolkit.reconcile import Options, Reconciliation
from auth_client.toolkit.reconcile_checker import GrpcUserStates, Pacer
from auth_client.toolkit.reconcile_model import Progress, ReconcileError, StateFile
from tests.conftest import ADMIN_TOKEN
from tests.helpers import create_user, delete_user
from tests.toolkit.support import fetch, run_cli

_SCHEMA = """
CREATE SCHEMA content;
CREATE TABLE content.bookmarks (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id    uuid NULL,
    deleted_at timestamptz NULL
);
CREATE INDEX bookmarks_user_id_idx ON content.bookmarks (user_id);
CREATE SCHEMA messaging;
CREATE TABLE messaging.messages (
    id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    sender_id text NOT NULL
);
CREATE TABLE messaging.reactions (
    id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id uuid NOT NULL
);
"""
EARLIER = "2020-01-01 00:00:00+00"


@dataclass
class World:
    url: str
    target: str
    active: list[str]
    deleted: list[str]
    never: list[str]


@pytest.fixture
async def world(server, admin_stub, new_database) -> World:
    url = new_database()
    active = [(await create_user(admin_stub)).id for _ in range(3)]
    deleted = [(await create_user(admin_stub)).id for _ in range(2)]
    for user_id in deleted:
        await delete_user(admin_stub, user_id)
    never = [str(uuid.uuid4()), str(uuid.uuid4())]
    a, d, n = active, deleted, never
    rows = [a[0], a[0], a[1], a[2], d[0], d[0], d[0], d[1], n[0], n[0], n[1], None, None]
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(_SCHEMA)
        await conn.executemany(
            "INSERT INTO content.bookmarks (user_id) VALUES ($1::uuid)", [(r,) for r in rows]
        )
        # One orphan row was soft-deleted long ago: soft-delete must leave it alone.
        await conn.execute(
            f"UPDATE content.bookmarks SET deleted_at = '{EARLIER}'"
            " WHERE id = (SELECT min(id) FROM content.bookmarks WHERE user_id = $1)",
            uuid.UUID(d[0]),
        )
        senders = [a[0], d[0].upper(), n[0], "not-a-uuid", "{" + a[1] + "}", "", a[1]]
        await conn.executemany(
            "INSERT INTO messaging.messages (sender_id) VALUES ($1)", [(s,) for s in senders]
        )
        await conn.executemany(
            "INSERT INTO messaging.reactions (user_id) VALUES ($1::uuid)", [(a[0],), (n[1],)]
        )
    finally:
        await conn.close()
    return World(url, server.address, active, deleted, never)


async def run_reconcile(
    world: World, stderr: io.StringIO | None = None, state: StateFile | None = None, **kw
):
    # This small world is mostly orphans: these tests are about fixing, not the guard
    # (test_reconcile_safety.py), and about content.bookmarks, whose fixes cascade nowhere.
    defaults = {"table": "content.bookmarks", "column": "user_id", "batch_size": 2}
    options = Options(**{**defaults, "max_orphan_fraction": 1.0, **kw})
    conn = await asyncpg.connect(world.url)
    try:
        async with GrpcUserStates(world.target, token=ADMIN_TOKEN) as checker:
            return await Reconciliation(
                conn,
                checker,
                options,
                pacer=Pacer(0),
                progress=Progress(stderr or io.StringIO(), interval=0),
                state=state,
            ).run()
    finally:
        await conn.close()


async def bookmarks(world: World) -> list[tuple[str | None, bool]]:
    rows = await fetch(
        world.url, "SELECT user_id::text, deleted_at FROM content.bookmarks ORDER BY id"
    )
    return [(r["user_id"], r["deleted_at"] is not None) for r in rows]


async def test_dry_run_reports_exactly_the_planted_orphans_and_changes_nothing(world) -> None:
    before = await bookmarks(world)
    report = await run_reconcile(world)

    assert report.complete
    assert sorted(report.deleted_ids) == sorted(world.deleted)
    assert sorted(report.not_found_ids) == sorted(world.never)
    assert (report.deleted, report.not_found, report.orphans) == (2, 2, 4)
    assert report.ids_scanned == 7  # distinct non-null ids, over 4 batches of 2
    assert report.batches == 4
    assert report.rows_fixed == 0
    assert await bookmarks(world) == before


async def test_delete_removes_exactly_the_orphan_rows(world) -> None:
    before = await bookmarks(world)
    orphans = set(world.deleted) | set(world.never)
    report = await run_reconcile(world, action="delete", fix_rows=1)  # one row per transaction

    # Live orphan rows only: the row soft-deleted long ago is left alone.
    assert report.rows_fixed == sum(1 for uid, soft in before if uid in orphans and not soft) == 6
    assert report.rows_fixed_by_table == {"content.bookmarks": 6}
    assert await bookmarks(world) == [row for row in before if row[0] not in orphans or row[1]]
    again = await run_reconcile(world)
    assert again.orphans == 0
    assert (again.soft_deleted, again.soft_deleted_rows) == (1, 1)  # reported apart


async def test_soft_delete_marks_only_live_orphan_rows(world) -> None:
    orphans = set(world.deleted) | set(world.never)
    report = await run_reconcile(world, action="soft-delete", fix_rows=2)

    assert report.orphans == 4
    assert report.rows_fixed == 6  # the 7th orphan row was soft-deleted before
    rows = await fetch(world.url, "SELECT user_id::text, deleted_at FROM content.bookmarks")
    for row in rows:
        assert (row["deleted_at"] is not None) == (row["user_id"] in orphans), row
    kept = await fetch(
        world.url, f"SELECT count(*) FROM content.bookmarks WHERE deleted_at = '{EARLIER}'"
    )
    assert kept[0][0] == 1  # its original deleted_at is untouched
    # Soft-deleted rows are no longer live orphans.
    assert (await run_reconcile(world, action="soft-delete", dry_run=True)).orphans == 0


async def test_set_null_clears_exactly_the_orphan_ids(world) -> None:
    before = await bookmarks(world)
    orphans = set(world.deleted) | set(world.never)
    report = await run_reconcile(world, action="set-null", batch_size=1000)

    assert report.rows_fixed == 6  # live rows only
    expected = [(None if uid in orphans and not soft else uid, soft) for uid, soft in before]
    assert await bookmarks(world) == expected


async def test_actions_that_cannot_apply_fail_before_changing_anything(world) -> None:
    with pytest.raises(
        ReconcileError,
        match=r"set-null cannot apply .*: the column is NOT NULL \(actions that apply: delete\)",
    ):
        await run_reconcile(world, table="messaging.reactions", column="user_id", action="set-null")
    with pytest.raises(ReconcileError, match="has no deleted_at column"):
        await run_reconcile(
            world, table="messaging.reactions", column="user_id", action="soft-delete"
        )
    with pytest.raises(ReconcileError, match="has no column 'nope'"):
        await run_reconcile(world, column="nope")
    with pytest.raises(ReconcileError, match=r"table content\.missing does not exist"):
        await run_reconcile(world, table="content.missing")
    with pytest.raises(ReconcileError, match="type bigint"):
        await run_reconcile(world, column="id")
    rows = await fetch(world.url, "SELECT count(*) FROM messaging.reactions")
    assert rows[0][0] == 2


async def test_text_column_reports_non_uuid_values_apart_and_never_touches_them(world) -> None:
    err = io.StringIO()
    report = await run_reconcile(
        world, stderr=err, table="messaging.messages", column="sender_id", action="delete"
    )
    assert "warning: no index starts with sender_id" in err.getvalue()

    assert report.deleted_ids == [world.deleted[0].upper()]  # the value as stored
    assert report.not_found_ids == [world.never[0]]
    assert sorted(report.invalid_values) == sorted(["not-a-uuid", "{" + world.active[1] + "}", ""])
    assert report.rows_fixed == 2
    rows = await fetch(world.url, "SELECT sender_id FROM messaging.messages ORDER BY id")
    assert [r[0] for r in rows] == [
        world.active[0],
        "not-a-uuid",
        "{" + world.active[1] + "}",
        "",
        world.active[1],
    ]


async def test_a_stopped_run_resumes_from_its_state_file(world, tmp_path) -> None:
    state = StateFile(tmp_path / "state.json")
    first = await run_reconcile(world, state=state, max_batches=2, action="delete")
    assert not first.complete
    assert first.stopped == "max-batches"
    assert state.path.exists()
    saved = json.loads(state.path.read_text())
    assert saved["cursor"] == first.cursor
    assert saved["batches"] == 2

    err = io.StringIO()
    second = await run_reconcile(world, stderr=err, state=state, action="delete")
    assert second.complete
    assert second.resumed_from == first.cursor
    assert "resuming from state file" in err.getvalue()
    assert sorted(second.deleted_ids) == sorted(world.deleted)  # counts span both runs
    assert sorted(second.not_found_ids) == sorted(world.never)
    assert second.rows_fixed == 6  # live orphan rows
    assert not state.path.exists()  # the next scheduled run starts over
    await run_reconcile(world, state=state, max_batches=1)  # leaves a dry run's state
    with pytest.raises(ReconcileError, match="belongs to another run"):
        await run_reconcile(world, state=state, action="delete")


async def test_resume_from_skips_ids_up_to_the_given_one(world) -> None:
    everything = sorted(world.active + world.deleted + world.never)
    start = everything[3]
    report = await run_reconcile(world, resume_from=start)
    assert report.ids_scanned == 3
    later = {i for i in world.deleted + world.never if i > start}
    assert set(report.deleted_ids + report.not_found_ids) == later


async def test_auth_service_unreachable_is_a_clear_error(world, unused_tcp_port) -> None:
    conn = await asyncpg.connect(world.url)
    try:
        async with GrpcUserStates(
            f"127.0.0.1:{unused_tcp_port}", timeout=2, retries=1, backoff=0.01
        ) as checker:
            with pytest.raises(ReconcileError, match="UNAVAILABLE"):
                await Reconciliation(
                    conn,
                    checker,
                    Options("content.bookmarks", "user_id"),
                    pacer=Pacer(0),
                    progress=Progress(io.StringIO()),
                ).run()
    finally:
        await conn.close()


async def test_cli_reconcile_json_end_to_end(world) -> None:
    code, out, err = await run_cli(
        "reconcile",
        "--database-url", world.url,
        "--table", "content.bookmarks",
        "--column", "user_id",
        "--target", world.target,
        "--token", ADMIN_TOKEN,
        "--action", "delete",
        "--batch-size", "3",
        "--rate", "50",
        "--max-orphan-fraction", "1",
        "--format", "json",
    )  # fmt: skip
    assert code == 0, err
    data = json.loads(out)
    assert data["orphans"] == {"total": 4, "deleted": 2, "not_found": 2, "rows": 6}
    assert sorted(data["orphan_ids"]["deleted"]) == sorted(world.deleted)
    assert sorted(data["orphan_ids"]["not_found"]) == sorted(world.never)
    assert data["rows_fixed"] == 6  # the orphan row soft-deleted long ago stays
    assert data["complete"] is True
    assert "reconcile: done:" in err
    remaining = await fetch(world.url, "SELECT count(*) FROM content.bookmarks")
    assert remaining[0][0] == 13 - 6

    code, _, err = await run_cli(
        "reconcile", "--database-url", world.url, "--table", "messaging.reactions",
        "--column", "user_id", "--target", world.target, "--action", "set-null",
    )  # fmt: skip
    assert code == 1
    assert "NOT NULL" in err


async def test_pacer_spaces_batches_evenly() -> None:
    now = [100.0]
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    pacer = Pacer(4, clock=lambda: now[0], sleep=sleep)
    for _ in range(3):
        await pacer.wait()
    assert slept == [0.25, 0.25]
    now[0] += 10  # idle for a while: no burst credit, no sleep
    await pacer.wait()
    assert slept == [0.25, 0.25]
