"""Content service: soft-delete a deleted user's posts, bookmarks and stories when
`user_deleted` arrives.

Rows are not removed but stamped `deleted_at = <the user's deleted_at>` (readers
already filter on `deleted_at IS NULL`), so nothing is lost if a deletion has to
be investigated. Only rows still live are stamped: the same event twice changes
nothing the second time, and content the user had deleted earlier keeps its own
time. The event id is recorded in the same transaction
(auth_client.events.deduplicated).

Run it against `auth-service dev` (from the repository root):

    # terminal 1: prints the Kafka address and demo user ids, and logs
    # "embedded PostgreSQL on 127.0.0.1:<PGPORT>"
    .venv/bin/auth-service dev

    # terminal 2: tables in schema "content" of that PostgreSQL; --seed gives bob
    # posts, a bookmark and a story
    .venv/bin/python examples/cleanup_content.py \
        --bootstrap 127.0.0.1:9092 \
        --database-url postgresql://postgres@127.0.0.1:<PGPORT>/postgres \
        --seed <bob's id>

    # terminal 3: delete bob; terminal 2 logs what it soft-deleted
    AUTH_SERVICE_TOKEN=<admin token> .venv/bin/auth-service users delete <bob's id>
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg

from auth_client import AuthClient
from auth_client.events import (
    ProcessedEvents,
    UserDeletedConsumer,
    UserDeletedEvent,
    all_of,
    deduplicated,
    invalidate_cache,
)

SCHEMA = Path(__file__).with_name("cleanup_content_schema.sql")
PROCESSED = ProcessedEvents("content.processed_events")
log = logging.getLogger("cleanup_content")

_SOFT_DELETE = {
    "posts": "UPDATE content.posts SET deleted_at = $2 WHERE author_id = $1 AND deleted_at IS NULL",
    "bookmarks": (
        "UPDATE content.bookmarks SET deleted_at = $2 WHERE user_id = $1 AND deleted_at IS NULL"
    ),
    "stories": (
        "UPDATE content.stories SET deleted_at = $2 WHERE author_id = $1 AND deleted_at IS NULL"
    ),
}


async def cleanup_user(conn: Any, event: UserDeletedEvent) -> dict[str, int]:
    """Soft-delete the user's content in the caller's transaction. Returns how many
    rows changed per table (all zero the second time)."""
    user_id = uuid.UUID(event.user_id)
    changed = {
        table: int((await conn.execute(sql, user_id, event.deleted_at)).rsplit(" ", 1)[-1])
        for table, sql in _SOFT_DELETE.items()
    }
    log.info("user %s deleted: soft-deleted %s", event.user_id, changed)
    return changed


async def _handle(conn: Any, event: UserDeletedEvent) -> None:
    await cleanup_user(conn, event)


async def apply_schema(conn: Any) -> None:
    await conn.execute(SCHEMA.read_text())


async def seed(conn: Any, user_id: str) -> None:
    """Two posts and a story by the user, and a bookmark on someone else's post."""
    author = uuid.UUID(user_id)
    others_post = uuid.uuid4()
    async with conn.transaction():
        await conn.executemany(
            "INSERT INTO content.posts (id, author_id, body) VALUES ($1, $2, $3)",
            [
                (uuid.uuid4(), author, "first post"),
                (uuid.uuid4(), author, "second post"),
                (others_post, uuid.uuid4(), "someone else's post"),
            ],
        )
        await conn.execute(
            "INSERT INTO content.bookmarks (user_id, post_id) VALUES ($1, $2)", author, others_post
        )
        await conn.execute(
            "INSERT INTO content.stories (id, author_id, media_url, expires_at)"
            " VALUES ($1, $2, $3, $4)",
            uuid.uuid4(),
            author,
            "https://media.example/story.jpg",
            datetime.now(UTC) + timedelta(hours=24),
        )


async def run(args: argparse.Namespace) -> None:
    pool = await asyncpg.create_pool(args.database_url, min_size=1, max_size=4)
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(pool.close)
        async with pool.acquire() as conn:
            await apply_schema(conn)
            for user_id in args.seed:
                await seed(conn, user_id)
        handler = deduplicated(pool, _handle, PROCESSED)
        if args.auth_target:
            auth = await stack.enter_async_context(AuthClient(args.auth_target))
            handler = all_of(handler, invalidate_cache(auth))
        consumer = UserDeletedConsumer(
            handler,
            bootstrap_servers=args.bootstrap,
            group_id=args.group,
            topic=args.topic,
            dlq_topic=f"{args.topic}.dlq",
        )
        await stack.enter_async_context(consumer)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, consumer.stop)
        log.info("consuming %s as group %s", args.topic, args.group)
        await consumer.run()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bootstrap", default="127.0.0.1:9092", help="Kafka bootstrap servers")
    parser.add_argument("--database-url", required=True, help="the content database")
    parser.add_argument("--topic", default="user_deleted")
    parser.add_argument("--group", default="content-user-cleanup")
    parser.add_argument("--seed", action="append", default=[], metavar="USER_ID")
    parser.add_argument("--auth-target", help="auth-service host:port (cache invalidation)")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
