"""Messaging service: clean up a deleted user's rows when `user_deleted` arrives.

What the foreign keys' `ON DELETE` used to decide across the service boundary, done
from the event instead: the user leaves every conversation (memberships deleted);
their messages stay, with the sender anonymised to the tombstone user
(`TOMBSTONE_USER_ID`, the nil UUID, which auth-service never issues); conversations
they created are credited to the tombstone too. `sender_id` and `created_by` are
NOT NULL, as in real schemas: never SET NULL there (such an event would fail on
every retry and end in the dead-letter topic). A scheduled `auth-toolkit
reconcile` of these columns passes `--ignore-id 00000000-0000-0000-0000-000000000000`. The cleanup and the event id are written in one
transaction (auth_client.events.deduplicated), and the SQL is idempotent on its
own: the same event twice changes nothing the second time.

Run it against `auth-service dev` (from the repository root):

    # terminal 1: prints the Kafka address and demo user ids, and logs
    # "embedded PostgreSQL on 127.0.0.1:<PGPORT>"
    .venv/bin/auth-service dev

    # terminal 2: tables in schema "messaging" of that PostgreSQL; --seed gives
    # alice a conversation and messages so there is something to clean up
    .venv/bin/python examples/cleanup_messaging.py \
        --bootstrap 127.0.0.1:9092 \
        --database-url postgresql://postgres@127.0.0.1:<PGPORT>/postgres \
        --seed <alice's id>

    # terminal 3: delete alice; terminal 2 logs what it cleaned up
    AUTH_SERVICE_TOKEN=<admin token> .venv/bin/auth-service users delete <alice's id>

Add `--auth-target 127.0.0.1:50051` to also drop the user from an AuthClient cache
(`invalidate_cache`), as a service that validates ids with auth_client would. With
OTEL_EXPORTER_OTLP_ENDPOINT set, each event is handled in a span that continues the
deletion's trace (otel_setup.py, docs/tracing.md).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import uuid
from pathlib import Path
from typing import Any

import asyncpg
from otel_setup import start_tracing

from auth_client import AuthClient
from auth_client.events import (
    ProcessedEvents,
    UserDeletedConsumer,
    UserDeletedEvent,
    all_of,
    deduplicated,
    invalidate_cache,
)

SCHEMA = Path(__file__).with_name("cleanup_messaging_schema.sql")
# "A deleted user": what a deleted user's messages and conversations point at.
TOMBSTONE_USER_ID = uuid.UUID(int=0)
PROCESSED = ProcessedEvents("messaging.processed_events")
log = logging.getLogger("cleanup_messaging")


async def cleanup_user(conn: Any, event: UserDeletedEvent) -> dict[str, int]:
    """Everything the messaging service does for one deleted user, in the caller's
    transaction. Returns how many rows changed (all zero the second time)."""
    user_id = uuid.UUID(event.user_id)
    left = await conn.execute(
        "DELETE FROM messaging.conversation_members WHERE user_id = $1", user_id
    )
    anonymized = await conn.execute(
        "UPDATE messaging.messages SET sender_id = $2 WHERE sender_id = $1",
        user_id,
        TOMBSTONE_USER_ID,
    )
    orphaned = await conn.execute(
        "UPDATE messaging.conversations SET created_by = $2 WHERE created_by = $1",
        user_id,
        TOMBSTONE_USER_ID,
    )
    changed = {
        "memberships_removed": _count(left),
        "messages_anonymized": _count(anonymized),
        "conversations_uncredited": _count(orphaned),
    }
    log.info("user %s deleted: %s", event.user_id, changed)
    return changed


async def _handle(conn: Any, event: UserDeletedEvent) -> None:
    await cleanup_user(conn, event)


def _count(status: str) -> int:
    return int(status.rsplit(" ", 1)[-1])


async def apply_schema(conn: Any) -> None:
    await conn.execute(SCHEMA.read_text())


async def seed(conn: Any, user_id: str) -> None:
    """A conversation with the user and someone else, and messages from both."""
    conversation, other = uuid.uuid4(), uuid.uuid4()
    async with conn.transaction():
        await conn.execute(
            "INSERT INTO messaging.conversations (id, title, created_by) VALUES ($1, $2, $3)",
            conversation,
            "seeded by cleanup_messaging.py",
            uuid.UUID(user_id),
        )
        await conn.executemany(
            "INSERT INTO messaging.conversation_members (conversation_id, user_id) VALUES ($1, $2)",
            [(conversation, uuid.UUID(user_id)), (conversation, other)],
        )
        await conn.executemany(
            "INSERT INTO messaging.messages (conversation_id, sender_id, body) VALUES ($1, $2, $3)",
            [
                (conversation, uuid.UUID(user_id), "hello"),
                (conversation, other, "hi!"),
                (conversation, uuid.UUID(user_id), "bye"),
            ],
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
    parser.add_argument("--database-url", required=True, help="the messaging database")
    parser.add_argument("--topic", default="user_deleted")
    parser.add_argument("--group", default="messaging-user-cleanup")
    parser.add_argument("--seed", action="append", default=[], metavar="USER_ID")
    parser.add_argument("--auth-target", help="auth-service host:port (cache invalidation)")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    stop_tracing = start_tracing("messaging-cleanup")
    try:
        asyncio.run(run(parser.parse_args()))
    finally:
        stop_tracing()  # export the spans before the process exits


if __name__ == "__main__":
    main()
