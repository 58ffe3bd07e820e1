"""Topics as production has them (#26 item 3): on Apache Kafka with
auto.create.topics.enable=false, a relay whose topic is missing says so in one line
naming the topic and the command that creates it, claims no outbox row meanwhile,
and publishes by itself once ops create the topic."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import asyncpg
import pytest

from auth_client.contract import USER_DELETED_TYPE
from auth_service.events.relay import Relay
from auth_service.events.relay_config import RelayConfig
from auth_service.events.topics import create_command, report
from auth_service.store.outbox import write_event
from tests.conftest import eventually
from tests.events.conftest import event_settings
from tests.events.support import Collector, create_topic, outbox_rows

if TYPE_CHECKING:
    from auth_service.local.apache_kafka import ApacheKafka

RELAY_LOG = "auth_service.events.relay"


async def _true(value: bool) -> bool:
    return value


def _lines(caplog: pytest.LogCaptureFixture, text: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == RELAY_LOG and text in r.getMessage()]


async def test_a_missing_topic_is_one_line_with_the_fix_and_the_relay_resumes_once_created(
    database_url: str,
    apache_kafka: ApacheKafka,
    topic_name: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=RELAY_LOG)
    bootstrap = apache_kafka.bootstrap_servers
    conn = await asyncpg.connect(database_url)
    try:
        async with conn.transaction():
            await write_event(
                conn, event_type=USER_DELETED_TYPE, key=str(uuid.uuid4()), payload=b"\x0a\x00"
            )
        settings = event_settings(database_url, bootstrap, topic_name, relay_max_backoff_s=0.5)
        async with Relay(RelayConfig.from_settings(settings)) as relay:
            await eventually(lambda: _true(bool(_lines(caplog, "does not exist"))), timeout=30)
            # Checked again at every backoff: no more lines (one a minute at most).
            checks = relay.topics.checks
            await eventually(lambda: _true(relay.topics.checks >= checks + 3), timeout=30)
            [line] = _lines(caplog, "does not exist")
            message = line.getMessage()
            assert line.levelno == logging.ERROR
            assert repr(topic_name) in message
            assert create_command(topic_name, bootstrap) in message
            # aiokafka's own line for the first check only: no send is tried, and later
            # checks ask quietly.
            assert caplog.text.count("not found in cluster metadata") <= 1
            # No row is held locked while the topic is missing: another session may
            # take every one of them at once.
            async with conn.transaction():
                locked = await conn.fetch("SELECT id FROM outbox FOR UPDATE NOWAIT")
            assert len(locked) == 1
            assert (await outbox_rows(database_url))[0]["published_at"] is None

            await create_topic(bootstrap, topic_name, 1)
            async with Collector(bootstrap, topic_name) as collector:  # from the start
                await eventually(lambda: _true(len(collector.records) == 1), timeout=30)
            assert _lines(caplog, "are in place")
    finally:
        await conn.close()


@dataclass
class _Partition:
    leader: int
    replicas: list[int]
    isr: list[int]


@dataclass
class _Metadata:
    """What `report` reads of aiokafka's ClusterMetadata."""

    _partitions: dict[str, dict[int, _Partition]] = field(default_factory=dict)

    def partitions_for_topic(self, topic: str) -> set[int] | None:
        found = self._partitions.get(topic)
        return set(found) if found else None


def test_the_report_tells_missing_leaderless_and_under_replicated_partitions() -> None:
    metadata = _Metadata(
        {
            "ok": {0: _Partition(1, [1, 2, 3], [1, 2, 3])},
            "thin": {0: _Partition(1, [1, 2, 3], [1, 2]), 1: _Partition(2, [1, 2, 3], [1, 2, 3])},
            "orphan": {0: _Partition(-1, [1, 2, 3], [])},
        }
    )
    found = report(metadata, ["ok", "thin", "orphan", "gone"])
    assert found.missing == ("gone",)
    assert found.without_leader == ("orphan[0]",)
    assert found.under_replicated == ("thin[0] (2/3 in sync)",)
    assert not found.publishable
    assert report(metadata, ["ok", "thin"]).publishable


async def test_a_producer_whose_sender_died_is_replaced_and_publishing_resumes(
    database_url: str,
    apache_kafka: ApacheKafka,
    topic_name: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """aiokafka's sender task ends for good on errors it does not retry (an
    idempotent producer's OutOfOrderSequenceNumber after a leader change); every
    later send then waits out its timeout. The relay replaces such a producer. The
    sender's end is brought about here by cancelling it, on the real broker."""
    caplog.set_level(logging.INFO, logger=RELAY_LOG)
    bootstrap = apache_kafka.bootstrap_servers
    await create_topic(bootstrap, topic_name, 1)
    settings = event_settings(database_url, bootstrap, topic_name, relay_max_backoff_s=0.5)
    conn = await asyncpg.connect(database_url)

    async def write() -> None:
        async with conn.transaction():
            await write_event(
                conn, event_type=USER_DELETED_TYPE, key=str(uuid.uuid4()), payload=b"\x0a\x00"
            )

    try:
        async with (
            Relay(RelayConfig.from_settings(settings)) as relay,
            Collector(bootstrap, topic_name) as collector,
        ):
            await write()
            relay.wake()
            await eventually(lambda: _true(len(collector.records) == 1), timeout=30)
            relay._publisher._producer._sender.sender_task.cancel()
            await write()
            relay.wake()
            await eventually(lambda: _true(len(collector.records) == 2), timeout=60)
            assert relay.publisher_restarts == 1
            assert _lines(caplog, "starting a new Kafka producer")
    finally:
        await conn.close()
