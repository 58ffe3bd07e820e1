"""The relay's Kafka side: one aiokafka producer that publishes outbox records with
`acks="all"` and reports, per record, whether the brokers acknowledged it.

A publish that fails or times out is ambiguous (the broker may have stored the
message before the answer was lost): the relay keeps the row and sends it again,
so consumers see a duplicate with the same `event-id` and deduplicate.

Each record carries the `traceparent` of its outbox row: while tracing, that of
its publish span (a child of the stored one), else the stored one as it is.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Self

from aiokafka import AIOKafkaProducer

from auth_client.contract import HEADER_TRACEPARENT, event_headers
from auth_service import tracing
from auth_service.lifecycle import LifecycleGuard

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from types import TracebackType

    from auth_service.store.outbox import OutboxRecord

log = logging.getLogger(__name__)


class PublishError(RuntimeError):
    """The brokers did not acknowledge a record (unreachable, timeout, rejected).
    `errors`: for a batch, each failed record's own error."""

    def __init__(self, message: str, *, errors: Sequence[BaseException] = ()) -> None:
        super().__init__(message)
        self.errors = tuple(errors)


@dataclass(frozen=True)
class ProducerConfig:
    bootstrap_servers: str
    # event type -> topic
    topics: Mapping[str, str]
    enable_idempotence: bool = False
    request_timeout_s: float = 10.0
    client_id: str = "auth-service-relay"
    linger_ms: int = 5


class Publisher:
    """Owns the producer: new -> running -> closed (`auth_service.lifecycle`).
    `start()` fails while Kafka is unreachable and may then be called again (the
    relay retries it); once it succeeded, a second one raises RuntimeError.
    `aclose()` is idempotent and never waits longer than the request timeout for
    unacknowledged records."""

    def __init__(self, config: ProducerConfig) -> None:
        self.config = config
        self._producer: Any = None
        self._life = LifecycleGuard("the Kafka publisher")

    @property
    def started(self) -> bool:
        return self._producer is not None

    def broken(self) -> BaseException | None:
        """Why the producer can send nothing any more, or None: aiokafka's sender
        task ends for good on an error it does not retry (an idempotent producer's
        OutOfOrderSequenceNumber, ProducerFenced), and every later send would wait
        out its timeout. The relay then replaces the publisher."""
        sender = getattr(self._producer, "_sender", None)
        task = getattr(sender, "sender_task", None)
        if task is None or not task.done():
            return None
        if task.cancelled():
            return PublishError("the producer's sender task was cancelled")
        return task.exception() or PublishError("the producer's sender task ended")

    async def start(self) -> None:
        with self._life.starting():
            c = self.config
            producer = AIOKafkaProducer(
                bootstrap_servers=c.bootstrap_servers,
                client_id=c.client_id,
                acks="all",
                enable_idempotence=c.enable_idempotence,
                request_timeout_ms=int(c.request_timeout_s * 1000),
                linger_ms=c.linger_ms,
                retry_backoff_ms=200,
            )
            try:
                await producer.start()
            except BaseException:
                await self._stop(producer)
                raise
            if not self._life.running:  # closed while connecting
                await self._stop(producer)
                raise RuntimeError("the Kafka publisher was closed while starting")
            self._producer = producer

    async def metadata(self, *, as_a_send: bool = True) -> Any:
        """The brokers' metadata (aiokafka's ClusterMetadata), asked now. `as_a_send`:
        for this publisher's topics, the way a send asks for them, so a broker that
        creates topics on first use (auto.create.topics.enable, the embedded one)
        creates them; else every topic, which creates nothing and makes aiokafka log
        nothing about a missing one. What `events.topics` checks."""
        if self._producer is None:
            raise PublishError("producer not started")
        client = self._producer.client
        try:
            async with asyncio.timeout(self.config.request_timeout_s):
                if not as_a_send:
                    return await client.fetch_all_metadata()
                client.set_topics(list(self.config.topics.values()))
                updated = await client.force_metadata_update()
        except TimeoutError:
            updated = False
        if not updated:
            raise PublishError("no metadata from the brokers within the request timeout")
        return client.cluster

    async def publish(self, records: Sequence[OutboxRecord]) -> list[BaseException | None]:
        """Send every record and wait for the brokers' acknowledgements. Returns one
        entry per record: None when acknowledged, else the error."""
        if self._producer is None:
            raise PublishError("producer not started")
        c = self.config
        # Records of one key are never in one batch (see OutboxStore), and aiokafka
        # sends one partition's batches in order, so per-key order holds.
        futures: list[asyncio.Future[Any] | BaseException] = []
        spans = [
            tracing.publish_span(c.topics.get(r.event_type, ""), r.traceparent, str(r.event_id))
            for r in records
        ]
        try:
            async with asyncio.timeout(c.request_timeout_s * 2 + 5):
                for record, span in zip(records, spans, strict=True):
                    futures.append(await self._send(record, span))
                pending = [f for f in futures if isinstance(f, asyncio.Future)]
                await asyncio.gather(*pending, return_exceptions=True)
        except TimeoutError:
            pass
        while len(futures) < len(records):
            futures.append(PublishError("no acknowledgement within the request timeout"))
        out = [_outcome(f) for f in futures]
        for span, error in zip(spans, out, strict=True):
            span.end(error)
        return out

    async def _send(
        self, record: OutboxRecord, span: tracing.PublishSpan
    ) -> asyncio.Future[Any] | BaseException:
        """Hand one record to the producer: its acknowledgement, or why it failed."""
        topic = self.config.topics.get(record.event_type)
        if topic is None:
            return PublishError(f"no topic for {record.event_type}")
        parent = span.traceparent(record.traceparent)
        extra = {HEADER_TRACEPARENT: parent} if parent else {}
        try:
            future: asyncio.Future[Any] = await self._producer.send(
                topic,
                value=record.payload,
                key=record.key.encode(),
                headers=event_headers(str(record.event_id), record.event_type, **extra),
            )
        except Exception as exc:  # e.g. no metadata: broker unreachable
            return exc
        return future

    async def _stop(self, producer: Any) -> None:
        try:
            async with asyncio.timeout(self.config.request_timeout_s + 2):
                await producer.stop()
        except Exception as exc:
            log.warning("kafka producer did not stop cleanly: %s", type(exc).__name__)
            # Its connections still go (a stop cut short, e.g. by brokers that do not
            # answer, would leave them open).
            with contextlib.suppress(Exception):
                await producer.client.close()

    async def aclose(self) -> None:
        await self._life.close(self._close)

    async def _close(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            await self._stop(producer)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


def _outcome(sent: asyncio.Future[Any] | BaseException) -> BaseException | None:
    """None when the brokers acknowledged; else the error (a pending send is
    cancelled and counts as unacknowledged)."""
    if isinstance(sent, BaseException):
        return sent
    if not sent.done():
        sent.cancel()
        return PublishError("no acknowledgement within the request timeout")
    if sent.cancelled():
        return PublishError("publish cancelled")
    return sent.exception()
