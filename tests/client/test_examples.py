"""The examples run as their users would: against `auth-service dev` in a
subprocess, each with its own database on a real PostgreSQL."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import asyncpg
import pytest

from auth_service.local.embedded import free_port
from tests.client.conftest import REPO
from tests.conftest import _admin, _with_database, run_sync
from tests.dev import DevProcess, dev_env

EXAMPLES = REPO / "examples"


@dataclass
class Dev:
    target: str
    users: dict[str, str]


@pytest.fixture(scope="module")
def dev(pg_admin_url: str) -> Iterator[Dev]:
    """`auth-service dev` on free ports, using a fresh database (DATABASE_URL)."""
    name = f"t_dev_{uuid.uuid4().hex[:12]}"
    run_sync(_admin(pg_admin_url, f"CREATE DATABASE {name}"))
    env = dev_env(DATABASE_URL=_with_database(pg_admin_url, name))
    try:
        with DevProcess("--log-level", "WARNING", env=env) as proc:
            proc.read_banner(timeout=60)
            users = proc.users
            assert {"alice", "bob", "carol"} <= set(users), proc.output
            yield Dev(proc.target, users)
    finally:
        run_sync(_admin(pg_admin_url, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))


@pytest.fixture
def service_db(pg_admin_url: str) -> Iterator[str]:
    """URL of a database that does not exist yet: the example creates it."""
    name = f"t_svc_{uuid.uuid4().hex[:12]}"
    yield _with_database(pg_admin_url, name)
    run_sync(_admin(pg_admin_url, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))


def run_example(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(EXAMPLES / script), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def query(url: str, sql: str) -> list[tuple[object, ...]]:
    async def fetch() -> list[tuple[object, ...]]:
        conn = await asyncpg.connect(url)
        try:
            return [tuple(row) for row in await conn.fetch(sql)]
        finally:
            await conn.close()

    return run_sync(fetch())


def test_messaging_adds_a_member_only_after_validating_the_user(dev: Dev, service_db: str) -> None:
    common = ("--target", dev.target, "--database-url", service_db, "--group", "general")
    alice = dev.users["alice"]

    first = run_example("messaging_add_member.py", *common, alice)
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout) == {
        "group": "general",
        "user_id": alice,
        "username": "alice",
        "added": True,
    }
    again = run_example("messaging_add_member.py", *common, alice)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["added"] is False

    stranger = str(uuid.uuid4())
    missing = run_example("messaging_add_member.py", *common, stranger)
    assert missing.returncode == 1
    # Refused by the SQLAlchemy integration's check before the flush, naming the column.
    assert f"group_members.user_id = {stranger}" in missing.stderr
    malformed = run_example("messaging_add_member.py", *common, "not-a-uuid")
    assert malformed.returncode == 2

    assert query(service_db, "SELECT user_id::text FROM group_members") == [(alice,)]
    assert query(service_db, "SELECT body FROM group_messages") == [
        ("Alice Example (@alice) joined",)
    ]


def test_content_creates_a_post_only_when_author_and_mentions_exist(
    dev: Dev, service_db: str
) -> None:
    common = ("--target", dev.target, "--database-url", service_db)
    alice, bob = dev.users["alice"], dev.users["bob"]

    ok = run_example(
        "content_create_post.py", *common, "--author", alice, "--mention", bob, "hi @bob"
    )
    assert ok.returncode == 0, ok.stderr
    post = json.loads(ok.stdout)
    assert (post["author_id"], post["mentions"]) == (alice, [bob])

    ghost = str(uuid.uuid4())
    rejected = run_example(
        "content_create_post.py", *common, "--author", alice, "--mention", ghost, "hi @ghost"
    )
    assert rejected.returncode == 1
    assert ghost in rejected.stderr
    assert query(service_db, "SELECT id::text, author_id::text FROM posts") == [
        (post["post_id"], alice)
    ]
    assert query(service_db, "SELECT user_id::text FROM post_mentions") == [(bob,)]


def test_examples_insert_nothing_when_auth_service_is_down(service_db: str) -> None:
    down = f"127.0.0.1:{free_port()}"  # nothing listens there
    result = run_example(
        "messaging_add_member.py",
        "--target",
        down,
        "--database-url",
        service_db,
        "--timeout",
        "1",
        str(uuid.uuid4()),
    )
    assert result.returncode == 3, result.stderr
    assert query(service_db, "SELECT count(*) FROM group_members") == [(0,)]


@pytest.mark.parametrize("script", ["messaging_add_member.py", "content_create_post.py"])
def test_a_bad_database_url_is_one_line_and_its_own_exit_code(script: str) -> None:
    """Issue #12 item 8: not a traceback, and not exit 1 ("no such user")."""
    nowhere = f"postgresql://postgres:secret@127.0.0.1:{free_port()}/service"
    args = (
        ["--author", str(uuid.uuid4()), "hi"]
        if script.startswith("content")
        else [str(uuid.uuid4())]
    )
    result = run_example(script, "--target", "127.0.0.1:1", "--database-url", nowhere, *args)
    assert result.returncode == 4, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "cannot reach the database" in result.stderr
    assert "secret" not in result.stderr


def test_an_unreachable_auth_service_is_one_line(service_db: str) -> None:
    down = f"127.0.0.1:{free_port()}"
    result = run_example(
        "content_create_post.py", "--target", down, "--database-url", service_db,
        "--timeout", "1", "--author", str(uuid.uuid4()), "hi",
    )  # fmt: skip
    assert result.returncode == 3, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
