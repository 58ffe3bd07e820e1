"""The cleanup examples: idempotent handlers on their own schemas, and the whole
path from DeleteUser to the cleaned-up rows with the examples running as
processes."""

from __future__ import annotations

import importlib.util
import sys
import uuid
from datetime import UTC, datetime
from types import ModuleType
from typing import TYPE_CHECKING, Any

import asyncpg

from auth_client.events import UserDeletedEvent
from tests.conftest import eventually
from tests.events.support import REPO, Proc, admin_stub
from tests.helpers import create_user, delete_user

if TYPE_CHECKING:
    from collections.abc import Callable

    from auth_service.api.server import AuthServer


def load(name: str) -> ModuleType:
    """examples/NAME.py as a module, its helpers (otel_setup) importable as when it
    runs as a script."""
    spec = importlib.util.spec_from_file_location(name, REPO / "examples" / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(REPO / "examples"))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(REPO / "examples"))
    return module


messaging = load("cleanup_messaging")
content = load("cleanup_content")


def event_for(user_id: str) -> UserDeletedEvent:
    now = datetime.now(UTC)
    return UserDeletedEvent(str(uuid.uuid4()), user_id, deleted_at=now, occurred_at=now)


async def snapshot(conn: asyncpg.Connection, *tables: str) -> dict[str, list[Any]]:
    return {
        t: [tuple(r) for r in await conn.fetch(f"SELECT * FROM {t} ORDER BY 1, 2")] for t in tables
    }


MESSAGING_TABLES = (
    "messaging.conversations",
    "messaging.conversation_members",
    "messaging.messages",
)
CONTENT_TABLES = ("content.posts", "content.bookmarks", "content.stories")


async def test_messaging_cleanup_removes_memberships_and_anonymizes_messages(
    new_database: Callable[[], str],
) -> None:
    deleted, kept = str(uuid.uuid4()), str(uuid.uuid4())
    conn = await asyncpg.connect(new_database())
    try:
        await messaging.apply_schema(conn)
        await messaging.seed(conn, deleted)
        await messaging.seed(conn, kept)
        before = await snapshot(conn, *MESSAGING_TABLES)
        event = event_for(deleted)
        async with conn.transaction():
            first = await messaging.cleanup_user(conn, event)
        after_first = await snapshot(conn, *MESSAGING_TABLES)
        async with conn.transaction():
            second = await messaging.cleanup_user(conn, event)
        after_second = await snapshot(conn, *MESSAGING_TABLES)
        member_rows = await conn.fetch("SELECT user_id FROM messaging.conversation_members")
        not_null = {
            r["attname"]: r["attnotnull"]
            for r in await conn.fetch(
                "SELECT attname, attnotnull FROM pg_attribute WHERE attrelid IN"
                " ('messaging.messages'::regclass, 'messaging.conversations'::regclass)"
                " AND attname IN ('sender_id', 'created_by')"
            )
        }
        sender_rows = await conn.fetch("SELECT sender_id FROM messaging.messages ORDER BY id")
    finally:
        await conn.close()
    assert first == {
        "memberships_removed": 1,
        "messages_anonymized": 2,
        "conversations_uncredited": 1,
    }
    assert second == dict.fromkeys(first, 0)
    assert after_second == after_first != before
    members = {r["user_id"] for r in member_rows}
    senders = [r["sender_id"] for r in sender_rows]
    assert uuid.UUID(deleted) not in members
    assert uuid.UUID(kept) in members
    # Every message is still there; the deleted user's ones are the tombstone's
    # (sender_id and created_by are NOT NULL, as in real schemas: never SET NULL).
    assert len(senders) == 6
    assert senders.count(messaging.TOMBSTONE_USER_ID) == 2
    assert str(messaging.TOMBSTONE_USER_ID) == "00000000-0000-0000-0000-000000000000"
    assert uuid.UUID(kept) in senders
    assert not_null == {"sender_id": True, "created_by": True}


async def test_content_cleanup_soft_deletes_posts_bookmarks_stories(
    new_database: Callable[[], str],
) -> None:
    deleted, kept = str(uuid.uuid4()), str(uuid.uuid4())
    conn = await asyncpg.connect(new_database())
    try:
        await content.apply_schema(conn)
        await content.seed(conn, deleted)
        await content.seed(conn, kept)
        event = event_for(deleted)
        async with conn.transaction():
            first = await content.cleanup_user(conn, event)
        after_first = await snapshot(conn, *CONTENT_TABLES)
        async with conn.transaction():
            second = await content.cleanup_user(conn, event)
        after_second = await snapshot(conn, *CONTENT_TABLES)
        live = await conn.fetch(
            "SELECT author_id FROM content.posts WHERE deleted_at IS NULL"
            " UNION ALL SELECT user_id FROM content.bookmarks WHERE deleted_at IS NULL"
            " UNION ALL SELECT author_id FROM content.stories WHERE deleted_at IS NULL"
        )
        stamped = await conn.fetchval(
            "SELECT count(*) FROM content.posts WHERE deleted_at = $1", event.deleted_at
        )
    finally:
        await conn.close()
    assert first == {"posts": 2, "bookmarks": 1, "stories": 1}
    assert second == {"posts": 0, "bookmarks": 0, "stories": 0}
    assert after_second == after_first
    assert uuid.UUID(deleted) not in {r[0] for r in live}
    assert uuid.UUID(kept) in {r[0] for r in live}
    assert stamped == 2  # the user's deleted_at, not the time the event arrived


async def test_examples_clean_up_after_a_real_deletion(
    events_server: AuthServer,
    new_database: Callable[[], str],
    kafka_bootstrap: str,
    topic: str,
) -> None:
    async with admin_stub(events_server.address) as admin:
        user_id = (await create_user(admin)).id
        procs: list[Proc] = []
        urls = {"messaging": new_database(), "content": new_database()}
        for name, url in urls.items():
            args = ("--bootstrap", kafka_bootstrap, "--topic", topic, "--database-url", url)
            argv = ["examples/cleanup_" + name + ".py", *args, "--seed", user_id]
            procs.append(await Proc.script(*argv).start())
        try:
            await eventually(lambda: seeded(urls, user_id), timeout=60)
            await delete_user(admin, user_id)
            await eventually(lambda: cleaned(urls, user_id), timeout=90)
            codes = [await p.terminate(timeout=30) for p in procs]
            logs = [p.stderr() for p in procs]
        finally:
            for p in procs:
                await p.close()
    assert codes == [0, 0], logs
    assert "memberships_removed" in logs[0]
    assert "soft-deleted" in logs[1]


async def _fetch(url: str, sql: str, *args: Any) -> Any:
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetchval(sql, *args)
    except asyncpg.UndefinedTableError:
        return None
    finally:
        await conn.close()


async def seeded(urls: dict[str, str], user_id: str) -> bool:
    members = await _fetch(
        urls["messaging"],
        "SELECT count(*) FROM messaging.conversation_members WHERE user_id = $1",
        uuid.UUID(user_id),
    )
    posts = await _fetch(
        urls["content"],
        "SELECT count(*) FROM content.posts WHERE author_id = $1",
        uuid.UUID(user_id),
    )
    return members == 1 and posts == 2


async def cleaned(urls: dict[str, str], user_id: str) -> bool:
    members = await _fetch(
        urls["messaging"],
        "SELECT count(*) FROM messaging.conversation_members WHERE user_id = $1",
        uuid.UUID(user_id),
    )
    live_posts = await _fetch(
        urls["content"],
        "SELECT count(*) FROM content.posts WHERE author_id = $1 AND deleted_at IS NULL",
        uuid.UUID(user_id),
    )
    return members == 0 and live_posts == 0
