"""A consumer in its own process, for the event tests. Prints one JSON object per
line on stdout:

    {"ready": true}
    {"event_id", "user_id", "key", "partition", "offset", "headers", "deleted_at", ...}

Modes:
  raw      a plain aiokafka consumer that decodes values with the generated
           auth.v1.UserDeleted code (the wire contract, without the toolkit)
  toolkit  auth_client.events.UserDeletedConsumer; --dedupe-url adds the
           processed_events dedupe and an `effects` table counting cleanups;
           prints {"received": ...} per delivery and {"cleaned": ...} per cleanup;
           --hang prints {"hanging": ...} from inside the handler and never
           returns (so the offset is never committed)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer

from auth_client.contract import events_pb2
from auth_client.events import (
    ProcessedEvents,
    UserDeletedConsumer,
    UserDeletedEvent,
    deduplicated,
)

EFFECTS_DDL = """
CREATE TABLE IF NOT EXISTS effects (
    event_id uuid NOT NULL,
    user_id  uuid NOT NULL
)
"""


def emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


async def run_raw(args: argparse.Namespace) -> None:
    consumer = AIOKafkaConsumer(
        args.topic,
        bootstrap_servers=args.bootstrap,
        group_id=args.group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    emit({"ready": True})
    try:
        async for record in consumer:
            msg = events_pb2.UserDeleted.FromString(record.value)
            emit(
                {
                    "key": record.key.decode(),
                    "partition": record.partition,
                    "offset": record.offset,
                    "headers": {k: v.decode() for k, v in record.headers},
                    "event_id": msg.event_id,
                    "user_id": msg.user_id,
                    "deleted_at": msg.deleted_at.ToJsonString(),
                    "occurred_at": msg.occurred_at.ToJsonString(),
                    "schema_version": msg.schema_version,
                    "fields": sorted(f.name for f, _ in msg.ListFields()),
                }
            )
            await consumer.commit()
    finally:
        await consumer.stop()


def describe(event: UserDeletedEvent) -> dict[str, Any]:
    assert event.origin is not None
    return {
        "event_id": event.event_id,
        "user_id": event.user_id,
        "key": event.origin.key,
        "partition": event.origin.partition,
        "offset": event.origin.offset,
    }


async def run_toolkit(args: argparse.Namespace) -> None:
    pool = None
    if args.dedupe_url:
        pool = await asyncpg.create_pool(args.dedupe_url, min_size=1, max_size=2)
        async with pool.acquire() as conn:
            await ProcessedEvents().create_table(conn)
            await conn.execute(EFFECTS_DDL)

    async def effect(event: UserDeletedEvent) -> None:
        emit({"cleaned": describe(event)})
        if args.hang:
            emit({"hanging": describe(event)})
            await asyncio.Event().wait()

    async def cleanup(conn: Any, event: UserDeletedEvent) -> None:
        await conn.execute(
            "INSERT INTO effects (event_id, user_id) VALUES ($1, $2)",
            event.event_id,
            event.user_id,
        )
        await effect(event)

    inner = deduplicated(pool, cleanup) if pool is not None else effect

    async def handler(event: UserDeletedEvent) -> None:
        emit({"received": describe(event)})  # every delivery, duplicates too
        await inner(event)

    consumer = UserDeletedConsumer(
        handler,
        bootstrap_servers=args.bootstrap,
        group_id=args.group,
        topic=args.topic,
        session_timeout_ms=6000,
        heartbeat_interval_ms=1000,
    )
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, consumer.stop)
    try:
        async with consumer:
            emit({"ready": True})
            await consumer.run()
    finally:
        if pool is not None:
            await pool.close()
    emit({"stopped": True, "handled": consumer.stats.handled})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["raw", "toolkit"])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--dedupe-url")
    parser.add_argument("--hang", action="store_true")
    args = parser.parse_args()
    asyncio.run(run_raw(args) if args.mode == "raw" else run_toolkit(args))


if __name__ == "__main__":
    main()
