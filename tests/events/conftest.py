"""Fixtures for the event tests: a server with its relay, topics, a private broker."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from auth_service.api.server import AuthServer
from tests.conftest import make_settings
from tests.events.support import create_topic

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from auth_service.config import Settings


def event_settings(database_url: str, bootstrap: str, topic: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "kafka_bootstrap_servers": bootstrap,
        "kafka_topic": topic,
        "kafka_request_timeout_s": 3.0,
        "relay_poll_interval_s": 0.5,
        "relay_max_backoff_s": 1.0,
    }
    values.update(overrides)
    return make_settings(database_url, **values)


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
