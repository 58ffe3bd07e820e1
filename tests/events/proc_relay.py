"""An outbox relay in its own process that stops between publish and mark: after
the brokers acknowledged a batch it prints {"published": [event ids]} and hangs
(holding its transaction open) until the test kills it."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import TYPE_CHECKING

from auth_service.config import Settings
from auth_service.events.relay import Relay
from auth_service.events.relay_config import RelayConfig

if TYPE_CHECKING:
    from collections.abc import Sequence

    from auth_service.store.outbox import OutboxRecord


async def main(args: argparse.Namespace) -> None:
    settings = Settings(
        database_url=args.database_url,
        kafka_bootstrap_servers=args.bootstrap,
        kafka_topic=args.topic,
    )

    async def hang_after_publish(records: Sequence[OutboxRecord]) -> None:
        sys.stdout.write(json.dumps({"published": [str(r.event_id) for r in records]}) + "\n")
        sys.stdout.flush()
        await asyncio.Event().wait()

    async with Relay(RelayConfig.from_settings(settings), on_published=hang_after_publish):
        sys.stdout.write(json.dumps({"ready": True}) + "\n")
        sys.stdout.flush()
        await asyncio.Event().wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    asyncio.run(main(parser.parse_args()))
