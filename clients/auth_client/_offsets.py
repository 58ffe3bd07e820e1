"""The offsets side of UserDeletedConsumer: which partitions this member owns,
the next offset to commit for each (the message after the last one handled), and
the rebalance listener that commits them before partitions are given up, so the
next owner starts after what was handled here."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.structs import OffsetAndMetadata

log = logging.getLogger("auth_client.events")


@dataclass
class ConsumerStats:
    handled: int = 0
    retries: int = 0
    dead_lettered: int = 0
    skipped: int = 0
    commit_failures: int = 0


class Offsets(ConsumerRebalanceListener):  # type: ignore[misc]  # untyped base
    """Owned partitions and offsets to commit. `lock` serialises handling and
    committing against rebalances; callers of `commit` hold it."""

    def __init__(self, consumer: AIOKafkaConsumer, stats: ConsumerStats) -> None:
        self._consumer = consumer
        self._stats = stats
        self.lock = asyncio.Lock()
        self.owned: set[TopicPartition] = set()
        self._pending: dict[TopicPartition, int] = {}

    def handled(self, record: Any) -> None:
        """`record` may be committed (its handler returned, or it was dead-lettered)."""
        self._pending[TopicPartition(record.topic, record.partition)] = record.offset + 1

    async def commit(self, tps: set[TopicPartition]) -> None:
        offsets = {
            tp: OffsetAndMetadata(self._pending[tp], "") for tp in tps if tp in self._pending
        }
        if not offsets:
            return
        try:
            await self._consumer.commit(offsets)
        except KafkaError as exc:
            # Rebalanced meanwhile, or the broker is unreachable: these messages
            # will be delivered again (at least once), the handlers are idempotent.
            self._stats.commit_failures += 1
            log.warning("offset commit failed (messages will be redelivered): %r", exc)
        else:
            for tp, meta in offsets.items():
                if self._pending.get(tp) == meta.offset:
                    del self._pending[tp]

    async def commit_all(self) -> None:
        async with self.lock:
            await self.commit(set(self._pending))

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        async with self.lock:
            await self.commit(set(revoked) & set(self._pending))
            self.owned -= set(revoked)
            for tp in revoked:
                self._pending.pop(tp, None)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self.owned |= set(assigned)
