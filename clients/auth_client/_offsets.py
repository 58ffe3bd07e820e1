"""The offsets side of UserDeletedConsumer: which partitions this member owns,
the next offset to commit for each (the message after the last one handled), the
message being handled now, and the rebalance listener that commits before
partitions are given up, so the next owner starts after what was handled here.

A rebalance never waits on a handler for longer than `revoke_timeout_s`: it stops
starting messages of the revoked partitions at once, gives the handler in progress
that long, cancels it if it has not returned (its message is not committed, so the
next owner gets it again), commits what was really handled and lets the partitions
go. Handling and committing do not share a lock; each message is handled in a task
of its own, tagged with the assignment it was started under, and a result that
arrives after its partition was revoked is dropped."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.structs import OffsetAndMetadata

if TYPE_CHECKING:
    from collections.abc import Coroutine

log = logging.getLogger("auth_client.events")

COMMIT_TIMEOUT_S = 5.0
"""Bound on one offset commit (aiokafka retries retriable errors without an end)."""


@dataclass
class ConsumerStats:
    handled: int = 0
    retries: int = 0
    dead_lettered: int = 0
    skipped: int = 0
    commit_failures: int = 0
    dead_letter_failures: int = 0
    """Messages whose dead-letter write was given up: left uncommitted, delivered again."""
    handlers_cancelled: int = 0
    """Handlers cancelled at a bound (rebalance, stop/close): their messages are not
    committed and are delivered again."""


class Offsets(ConsumerRebalanceListener):  # type: ignore[misc]  # untyped base
    """Owned partitions, offsets to commit and the message in progress. `lock`
    serialises commits (the run loop's against the rebalance listener's)."""

    def __init__(
        self, consumer: AIOKafkaConsumer, stats: ConsumerStats, *, revoke_timeout_s: float
    ) -> None:
        self._consumer = consumer
        self._stats = stats
        self.revoke_timeout_s = revoke_timeout_s
        self.lock = asyncio.Lock()
        self.owned: set[TopicPartition] = set()  # new messages may start on these
        self._epochs: dict[TopicPartition, int] = {}  # assignment each tp is held under
        self._assignments = 0
        self._pending: dict[TopicPartition, int] = {}
        self._in_flight: tuple[TopicPartition, asyncio.Task[bool]] | None = None

    # -- the run loop's side ----------------------------------------------------

    def epoch(self, tp: TopicPartition) -> int | None:
        """The assignment `tp` is held under now (None: not held)."""
        return self._epochs.get(tp)

    def may_start(self, tp: TopicPartition, epoch: int | None) -> bool:
        """A message of `tp` fetched under `epoch` may be started."""
        return epoch is not None and tp in self.owned and self._epochs.get(tp) == epoch

    async def handle(self, record: Any, epoch: int | None, work: Coroutine[Any, Any, bool]) -> bool:
        """Run `work` (handling `record`; True when it may be committed) in a task a
        rebalance or close can bound and cancel. True when `record` was marked
        handled; False when it was not (work said no, was cancelled, or its
        partition was revoked meanwhile)."""
        tp = TopicPartition(record.topic, record.partition)
        task = asyncio.create_task(self._handle_and_mark(tp, epoch, record, work))
        self._in_flight = (tp, task)
        try:
            await asyncio.wait({task})
        except asyncio.CancelledError:  # the run task itself is cancelled
            task.cancel()
            raise
        finally:
            self._in_flight = None
        return not task.cancelled() and task.result()

    async def _handle_and_mark(
        self, tp: TopicPartition, epoch: int | None, record: Any, work: Coroutine[Any, Any, bool]
    ) -> bool:
        if not await work:
            return False
        if self._epochs.get(tp) != epoch:
            return False  # revoked while handling: its next owner handles it again
        self.handled(record)
        return True

    def cancel_in_flight(self, why: str) -> bool:
        """Cancel the handler in progress (if any): its message stays uncommitted."""
        if self._in_flight is None:
            return False
        tp, task = self._in_flight
        if task.done() or task.cancelling():
            return False  # finished, or already being cancelled
        task.cancel()
        self._stats.handlers_cancelled += 1
        log.warning(
            "user_deleted handler for %s[%d] cancelled (%s); its message is not "
            "committed and will be delivered again",
            tp.topic,
            tp.partition,
            why,
        )
        return True

    def handled(self, record: Any) -> None:
        """`record` may be committed (its handler returned, or it was dead-lettered)."""
        self._pending[TopicPartition(record.topic, record.partition)] = record.offset + 1

    # -- commits ------------------------------------------------------------------

    async def commit(self, tps: set[TopicPartition]) -> None:
        async with self.lock:
            await self._commit(tps)

    async def commit_all(self) -> None:
        async with self.lock:
            await self._commit(set(self._pending))

    async def _commit(self, tps: set[TopicPartition]) -> None:
        offsets = {
            tp: OffsetAndMetadata(self._pending[tp], "") for tp in tps if tp in self._pending
        }
        if not offsets:
            return
        try:
            async with asyncio.timeout(COMMIT_TIMEOUT_S):
                await self._consumer.commit(offsets)
        except (KafkaError, TimeoutError) as exc:
            # Rebalanced meanwhile, or the broker is unreachable: these messages
            # will be delivered again (at least once), the handlers are idempotent.
            self._stats.commit_failures += 1
            log.warning("offset commit failed (messages will be redelivered): %r", exc)
        else:
            for tp, meta in offsets.items():
                if self._pending.get(tp) == meta.offset:
                    del self._pending[tp]

    # -- the rebalance listener -------------------------------------------------

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        revoked = set(revoked)
        self.owned -= revoked  # nothing more starts on these
        await self._settle(revoked)
        for tp in revoked:
            self._epochs.pop(tp, None)  # a result arriving later is dropped
        async with self.lock:
            await self._commit(revoked & set(self._pending))
        for tp in revoked:
            self._pending.pop(tp, None)

    async def _settle(self, revoked: set[TopicPartition]) -> None:
        """Give the handler in progress on a revoked partition `revoke_timeout_s`."""
        if self._in_flight is None or self._in_flight[0] not in revoked:
            return
        task = self._in_flight[1]
        await asyncio.wait({task}, timeout=self.revoke_timeout_s)
        if not task.done():
            self.cancel_in_flight(f"still running {self.revoke_timeout_s:g}s into a rebalance")

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self._assignments += 1
        for tp in assigned:
            self._epochs[tp] = self._assignments
        self.owned |= set(assigned)
