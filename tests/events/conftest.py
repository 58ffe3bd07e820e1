"""Fixtures for the event tests: a server with its relay, topics, a private broker.

Every test here that takes `kafka_bootstrap` runs twice: on the embedded broker
(Tansu, or the one KAFKA_BOOTSTRAP_SERVERS names) and on Apache Kafka itself (a
KRaft node started from Maven Central's artifacts with the compose file's
settings: auto.create.topics.enable=false, producers idempotent)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from auth_service.api.server import AuthServer
from tests.conftest import make_settings
from tests.events.support import IDEMPOTENT_BROKERS, create_topic, idempotent

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from auth_service.config import Settings


def event_settings(database_url: str, bootstrap: str, topic: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "kafka_bootstrap_servers": bootstrap,
        "kafka_enable_idempotence": idempotent(bootstrap),
        "kafka_topic": topic,
        "kafka_request_timeout_s": 3.0,
        "relay_poll_interval_s": 0.5,
        "relay_max_backoff_s": 1.0,
    }
    values.update(overrides)
    return make_settings(database_url, **values)


@pytest.fixture(scope="session", params=["embedded", "apache-kafka"])
def kafka_bootstrap(request: pytest.FixtureRequest) -> str:
    """The broker of the event tests: each test runs on both."""
    if request.param == "embedded":
        return str(request.getfixturevalue("embedded_kafka_bootstrap"))
    kafka = request.getfixturevalue("apache_kafka")
    IDEMPOTENT_BROKERS.add(kafka.bootstrap_servers)
    return str(kafka.bootstrap_servers)


@pytest.fixture
async def topic(kafka_bootstrap: str, topic_name: str) -> str:
    """A fresh topic with 3 partitions on the session broker."""
    await create_topic(kafka_bootstrap, topic_name, 3)
    return topic_name


@pytest.fixture
async def events_server(
    database_url: str, kafka_bootstrap: str, topic: str
) -> AsyncIterator[AuthServer]:
    """A server whose relay publishes to `topic`."""
    async with AuthServer(event_settings(database_url, kafka_bootstrap, topic)) as server:
        yield server
