"""The one consumer that times both peers: a plain aiokafka consumer of every
partition of the topic, from its end, noting when each record's key (the user id)
arrived. Not a group member and no handler: it only timestamps, the same way for the
relay's records and Debezium's.

It also checks what both must share: each record is on the partition Kafka's
default partitioner gives its key (what the relay's aiokafka producer and Connect's
Java producer both use, so one user's events stay in order on one partition), and a
key that arrives twice is counted as a duplicate.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Collection
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.partitioner import DefaultPartitioner

# How long a fetch waits on the broker; Apache Kafka answers as soon as data arrives.
FETCH_MAX_WAIT_MS = 25


class Arrivals:
    def __init__(self, bootstrap_servers: str, topic: str, partitions: int) -> None:
        self.topic = topic
        self._partitions = list(range(partitions))
        self._partitioner = DefaultPartitioner()
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap_servers,
            group_id=None,
            enable_auto_commit=False,
            fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
            max_poll_records=2000,
        )
        self.times: dict[str, float] = {}
        self.duplicates: dict[str, int] = {}
        self.misplaced = 0
        # Whole records, for the keys asked for with `keep`.
        self.kept: dict[str, Any] = {}
        self._keep: set[str] = set()
        self._signal = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        tps = [TopicPartition(self.topic, p) for p in self._partitions]
        try:
            await self._consumer.start()
            self._consumer.assign(tps)
            await self._consumer.seek_to_end(*tps)
        except BaseException:
            await self._consumer.stop()
            raise
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._consumer.stop()

    def keep(self, keys: Collection[str]) -> None:
        self._keep.update(keys)

    async def _run(self) -> None:
        while True:
            batch = await self._consumer.getmany(timeout_ms=200)
            now = time.monotonic()
            for records in batch.values():
                for record in records:
                    self._note(record, now)
            if batch:
                self._signal.set()

    def _note(self, record: Any, now: float) -> None:
        key = record.key.decode() if record.key else ""
        if key in self.times:
            self.duplicates[key] = self.duplicates.get(key, 0) + 1
            return
        self.times[key] = now
        if record.partition != self._partitioner(record.key, self._partitions, self._partitions):
            self.misplaced += 1
        if key in self._keep:
            self.kept[key] = record

    async def wait_any(self, keys: Collection[str], timeout: float) -> float | None:
        """When the first of `keys` arrived, or None after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            self._signal.clear()  # before looking: an arrival in between sets it again
            found = [self.times[k] for k in keys if k in self.times]
            if found:
                return min(found)
            if not await self._wait(deadline):
                return None

    async def wait_all(self, keys: Collection[str], timeout: float) -> float:
        """When the last of `keys` arrived; TimeoutError naming how many are missing."""
        deadline = time.monotonic() + timeout
        pending = list(keys)
        while True:
            self._signal.clear()
            pending = [k for k in pending if k not in self.times]
            if not pending:
                return max(self.times[k] for k in keys)
            if not await self._wait(deadline):
                raise TimeoutError(f"{len(pending)} of {len(keys)} events not delivered")

    async def _wait(self, deadline: float) -> bool:
        """Until the next batch arrives or `deadline`; False once it has passed."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._signal.wait(), remaining)
        return True
