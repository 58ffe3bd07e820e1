"""The Kafka side of a local replica: one aiokafka consumer of no group, assigned
every partition of the `user_created` and `user_deleted` topics, reading from the
end offsets it found before the export was taken (`open`).

Why that start is enough: the relay publishes an event only after its transaction
committed, so every event the export's snapshot does not reflect was published
after the snapshot, hence after these offsets were read. Events between the
offsets and the snapshot are applied again, which changes nothing (states only
move forward).

`changes()` decodes what arrived (a message that is not a valid event is skipped
and counted: its position never arrives, so the replica's gap rule reloads);
`ends(wait)` asks the brokers for the end offsets, the replica's liveness check,
and `lost_events(ends)` says whether the brokers hold fewer events than were read
(a broker restarted empty, a topic recreated). A question the brokers have not
answered within `wait` is left running, never cancelled (cancelling aiokafka in the
middle of connecting can leak the connection), and the next check waits for it.
Needs the `events` extra (aiokafka).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from auth_client.contract import (
    HEADER_EVENT_TYPE,
    USER_CREATED_TYPE,
    USER_DELETED_TYPE,
    EventDecodeError,
    decode_user_created,
    decode_user_deleted,
    header,
)

if TYPE_CHECKING:
    from auth_client._config import ReplicaConfig

log = logging.getLogger("auth_client.replica")

# How long a fetch waits on the broker (the embedded broker answers a fetch only
# when it expires, so this is part of every event's latency there).
FETCH_MAX_WAIT_MS = 25
# Longest wait for the consumer to stop (its connections are closed then anyway).
STOP_TIMEOUT_S = 5.0


class StreamError(Exception):
    """The event stream cannot be opened; the message says why and what to do."""


@dataclass(frozen=True, slots=True)
class Change:
    """One event: `user_id` created (or deleted), at `position` (0: unknown)."""

    user_id: uuid.UUID
    deleted: bool
    position: int


class EventStream:
    """The consumer of one load of a replica; opened once, closed once."""

    def __init__(self, config: ReplicaConfig, client_id: str) -> None:
        self._config = config
        self._kinds = {config.created_topic: False, config.deleted_topic: True}
        self._consumer = AIOKafkaConsumer(
            **{
                "bootstrap_servers": _servers(config.bootstrap_servers),
                "client_id": client_id,
                "group_id": None,
                "enable_auto_commit": False,
                # A position the brokers no longer have is an error, never a jump.
                "auto_offset_reset": "none",
                "fetch_max_wait_ms": FETCH_MAX_WAIT_MS,
                "request_timeout_ms": int(max(config.load_timeout, 5.0) * 1000),
                **dict(config.consumer_options),
            }
        )
        self._started = False
        self.partitions: list[TopicPartition] = []
        self._next: dict[TopicPartition, int] = {}  # the offset of the next event
        self._asking: asyncio.Task[dict[TopicPartition, int]] | None = None
        self.skipped = 0  # messages that were not valid events

    async def open(self) -> None:
        """Connect, find every partition of both topics and start at their ends.
        StreamError when the brokers cannot be reached or a topic is missing."""
        config = self._config
        where = _servers(config.bootstrap_servers)
        try:
            self._started = True
            await self._consumer.start()
            existing = await self._consumer.topics()
        except (KafkaError, OSError) as exc:
            raise StreamError(f"cannot reach Kafka at {where}: {_describe(exc)}") from exc
        partitions: list[TopicPartition] = []
        for topic in self._kinds:
            numbers = self._consumer.partitions_for_topic(topic) if topic in existing else None
            if not numbers:
                raise StreamError(
                    f"Kafka topic {topic!r} does not exist on {where}: auth-service's"
                    " relay publishes user events there (docs/events.md); create it, or"
                    " name the right topic in ReplicaConfig"
                )
            partitions += [TopicPartition(topic, n) for n in sorted(numbers)]
        try:
            ends = await self._consumer.end_offsets(partitions)
        except (KafkaError, OSError) as exc:
            raise StreamError(f"no end offsets from Kafka at {where}: {_describe(exc)}") from exc
        self.partitions = partitions
        self._consumer.assign(partitions)
        for tp in partitions:
            self._consumer.seek(tp, ends[tp])
            self._next[tp] = ends[tp]

    async def changes(self, timeout_ms: int) -> list[Change]:
        """What arrived within `timeout_ms` (an empty list when nothing did)."""
        batches = await self._consumer.getmany(timeout_ms=timeout_ms)
        out: list[Change] = []
        for tp, records in batches.items():
            for record in records:
                self._next[tp] = record.offset + 1
                change = self._decode(record)
                if change is not None:
                    out.append(change)
        return out

    def _decode(self, record: Any) -> Change | None:
        deleted = self._kinds[record.topic]
        kind = header(record.headers, HEADER_EVENT_TYPE)
        if kind is not None and kind != (USER_DELETED_TYPE if deleted else USER_CREATED_TYPE):
            return None  # another kind of event on this topic: not a state change
        try:
            if deleted:
                event: Any = decode_user_deleted(record.value)
            else:
                event = decode_user_created(record.value)
        except EventDecodeError as exc:
            self.skipped += 1
            log.warning(
                "auth_client replica: skipped a message of %s[%d] at offset %d that is not"
                " a valid event: %s",
                record.topic,
                record.partition,
                record.offset,
                exc,
            )
            return None
        return Change(uuid.UUID(event.user_id), deleted, event.position)

    async def ends(self, wait: float) -> dict[TopicPartition, int] | None:
        """The brokers' end offsets of every partition; None when they have not
        answered within `wait` seconds (still asking) or failed to."""
        if self._asking is None:
            self._asking = asyncio.ensure_future(self._consumer.end_offsets(self.partitions))
        asking = self._asking
        await asyncio.wait((asking,), timeout=wait)
        if not asking.done():
            return None
        self._asking = None
        if asking.cancelled() or asking.exception() is not None:
            return None
        return asking.result()

    def lost_events(self, ends: dict[TopicPartition, int]) -> TopicPartition | None:
        """A partition whose end is below what was read already, if any."""
        for tp, end in ends.items():
            if end < self._next.get(tp, 0):
                return tp
        return None

    async def aclose(self) -> None:
        if self._started:
            self._started = False
            await self._stop_consumer()
        asking, self._asking = self._asking, None
        if asking is not None:  # fails once the consumer is stopped, if it was still asking
            await asyncio.wait((asking,), timeout=1.0)
            asking.cancel()
            with contextlib.suppress(BaseException):
                await asking

    async def _stop_consumer(self) -> None:
        """Stop the consumer, within STOP_TIMEOUT_S. aiokafka's stop can raise the
        CancelledError of a fetch it cancelled (brokers gone) before it closed its
        connections: not ours, so it is swallowed (unless this task itself is being
        cancelled), and the connections are closed here."""
        stopped = False
        try:
            async with asyncio.timeout(STOP_TIMEOUT_S):
                await self._consumer.stop()
            stopped = True
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise
            log.debug("auth_client replica: the consumer's stop raised CancelledError")
        except Exception as exc:  # closing: say so, go on
            log.debug("auth_client replica: consumer did not stop cleanly: %r", exc)
        finally:
            if not stopped:
                with contextlib.suppress(Exception):
                    await self._consumer._client.close()


def _servers(servers: str | tuple[str, ...]) -> str:
    return servers if isinstance(servers, str) else ",".join(servers)


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


__all__ = ["Change", "EventStream", "StreamError"]
