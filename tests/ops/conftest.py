"""Fixtures of the operations tests."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from auth_service.embedded import EmbeddedError, EmbeddedKafka
from tests.conftest import _missing

if TYPE_CHECKING:
    from collections.abc import Iterator


@pytest.fixture
def own_kafka() -> Iterator[EmbeddedKafka]:
    """A broker of this test's own that it may stop and start again on the same port
    (a restarted embedded broker is empty; topics are created again on produce)."""
    try:
        broker = EmbeddedKafka()
        broker.start()
    except EmbeddedError as exc:
        _missing("embedded Kafka broker", exc)
    try:
        yield broker
    finally:
        broker.close()
