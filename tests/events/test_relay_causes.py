"""A relay failure is told by its real cause: the database, Kafka, or a bug
(issue #25, defect 4: every failure that was not a PublishError was logged as a
database failure). Real PostgreSQL, real broker."""

from __future__ import annotations

import logging
import socket
import uuid
from typing import TYPE_CHECKING

import asyncpg
import pytest
from aiokafka.errors import KafkaConnectionError, KafkaTimeoutError

from auth_client.contract import USER_DELETED_TYPE, decode_user_deleted
from auth_service.errors import UnavailableError
from auth_service.events.publisher import PublishError
from auth_service.events.relay import Cause, Relay, causes
from auth_service.events.relay_config import RelayConfig
from auth_service.store.outbox import write_event
from tests.conftest import eventually
from tests.events.conftest import event_settings
from tests.events.support import outbox_rows

if TYPE_CHECKING:
    from collections.abc import Sequence

    from auth_service.store.outbox import OutboxRecord

RELAY_LOG = "auth_service.events.relay"


async def _insert(url: str, payload: bytes) -> uuid.UUID:
    """An outbox row written by hand, as a bad writer (or an operator) might."""
    conn = await asyncpg.connect(url)
    try:
        async with conn.transaction():
            return await write_event(
                conn, event_type=USER_DELETED_TYPE, key=str(uuid.uuid4()), payload=payload
            )
    finally:
        await conn.close()


def _relay_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.name == RELAY_LOG and r.levelno >= logging.WARNING and "lag" not in r.getMessage()
    ]


async def _true(value: bool) -> bool:
    return value


async def test_a_bug_is_logged_as_unexpected_with_its_traceback_not_as_a_database_failure(
    database_url: str, kafka_bootstrap: str, topic: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=RELAY_LOG)
    await _insert(database_url, b"\xff\xff\xff\xff")  # not a serialized UserDeleted

    async def check_payloads(records: Sequence[OutboxRecord]) -> None:
        # Stands in for any step of the relay that raises a bug's exception: the
        # bad row's payload cannot be decoded.
        for record in records:
            decode_user_deleted(record.payload)

    config = RelayConfig.from_settings(event_settings(database_url, kafka_bootstrap, topic))
    async with Relay(config, on_published=check_payloads) as relay:
        await eventually(lambda: _true(bool(_relay_records(caplog))), timeout=30)
        [record] = _relay_records(caplog)
        message = record.getMessage()
        assert "PostgreSQL" not in message, message
        assert "database" not in message, message
        assert "unexpected error" in message, message
        assert "EventDecodeError" in message, message
        assert record.levelno == logging.ERROR
        trace = getattr(record, "exception", "")
        assert trace.startswith("Traceback"), trace
        assert "check_payloads" in trace
        # Retried (the row stays in the outbox), but said once for this cause.
        polls = relay.polls
        await eventually(lambda: _true(relay.polls >= polls + 3), timeout=30)
        assert len(_relay_records(caplog)) == 1, [r.getMessage() for r in caplog.records]
        assert relay.published == 0
    [row] = await outbox_rows(database_url)
    assert row["published_at"] is None


async def test_a_record_kafka_refuses_is_kafkas_failure(
    database_url: str, kafka_bootstrap: str, topic: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=RELAY_LOG)
    await _insert(database_url, b"\x0a" * (2 * 1024 * 1024))  # over max_request_size
    config = RelayConfig.from_settings(event_settings(database_url, kafka_bootstrap, topic))
    async with Relay(config) as relay:
        await eventually(lambda: _true(bool(_relay_records(caplog))), timeout=30)
        message = _relay_records(caplog)[0].getMessage()
        assert relay.published == 0
    assert f"Kafka at {kafka_bootstrap}" in message, message
    assert "MessageSizeTooLargeError" in message, message
    assert "PostgreSQL" not in message
    assert "unexpected" not in message
    [row] = await outbox_rows(database_url)
    assert row["published_at"] is None
    assert row["attempts"] >= 1


async def test_an_unreachable_database_is_the_databases_failure(
    kafka_bootstrap: str, topic: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=RELAY_LOG)
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"postgresql://auth@127.0.0.1:{port}/auth"
    config = RelayConfig.from_settings(event_settings(url, kafka_bootstrap, topic))
    async with Relay(config):
        await eventually(lambda: _true(bool(_relay_records(caplog))), timeout=30)
    messages = [r.getMessage() for r in _relay_records(caplog)]
    assert f"cannot connect to PostgreSQL at 127.0.0.1:{port}" in messages[0], messages
    assert not [m for m in messages if "unexpected" in m or "Kafka" in m], messages


def test_causes_of_failures_from_each_layer() -> None:
    """Which exception is whose (real exception classes, no fakes)."""
    database = [
        asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
        asyncpg.InternalClientError("cannot switch to state 15"),
        asyncpg.UndefinedTableError('relation "outbox" does not exist'),
        ConnectionRefusedError(111, "Connection refused"),
        TimeoutError(),
        UnavailableError("the database is unavailable"),
    ]
    for exc in database:
        assert causes(exc) == [(Cause.DATABASE, exc)], exc
    for exc in [KafkaConnectionError("no broker"), PublishError("producer not started")]:
        assert causes(exc) == [(Cause.KAFKA, exc)], exc
    for exc in [ValueError("bad"), UnicodeEncodeError("ascii", "é", 0, 1, "no"), KeyError("x")]:
        assert causes(exc) == [(Cause.UNEXPECTED, exc)], exc
    # A batch: every record's own bug apart, and Kafka's share once.
    bug, timeout = TypeError("not bytes"), KafkaTimeoutError()
    batch = PublishError("2 of 3 events not acknowledged", errors=[timeout, bug, timeout])
    assert causes(batch) == [(Cause.UNEXPECTED, bug), (Cause.KAFKA, batch)]
    only_bug = PublishError("1 of 1 events not acknowledged", errors=[bug])
    assert causes(only_bug) == [(Cause.UNEXPECTED, bug)]
