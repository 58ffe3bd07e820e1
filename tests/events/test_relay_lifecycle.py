"""One lifecycle for the relay, its publisher and its LISTEN connection: new ->
running -> closed; `start()` once, `aclose()` as often as wanted, a closed one is
not reused (issue #25). Real PostgreSQL and broker."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import uuid

import pytest

from auth_client.contract import USER_DELETED_TYPE
from auth_service.events.publisher import ProducerConfig, Publisher
from auth_service.events.relay import Relay
from auth_service.events.relay_config import RelayConfig
from auth_service.lifecycle import Lifecycle, LifecycleGuard
from auth_service.store.listen import Listener
from tests.conftest import eventually
from tests.events.conftest import event_settings


async def _true(value: bool) -> bool:
    return value


def _listen_tasks(channel: str) -> list[asyncio.Task[object]]:
    return [t for t in asyncio.all_tasks() if t.get_name() == f"listen-{channel}"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_listener_started_twice_refuses_and_runs_one_task(database_url: str) -> None:
    channel = f"c_{uuid.uuid4().hex[:8]}"
    listener = Listener(database_url, channel, lambda _payload: None, application_name="t")
    await listener.start()
    try:
        await eventually(lambda: _true(listener.listening), timeout=20)
        with contextlib.suppress(RuntimeError):
            await listener.start()
        assert len(_listen_tasks(channel)) == 1  # the second start leaked none
        assert listener.sessions == 1
        with pytest.raises(RuntimeError, match=f"LISTEN {channel} is already running"):
            await listener.start()
    finally:
        await listener.aclose()
    assert _listen_tasks(channel) == []
    assert not listener.listening
    await listener.aclose()  # twice: fine
    with pytest.raises(RuntimeError, match="closed"):
        await listener.start()


async def test_relay_refuses_a_second_start_and_closes_twice(
    database_url: str, kafka_bootstrap: str, topic: str
) -> None:
    config = RelayConfig.from_settings(event_settings(database_url, kafka_bootstrap, topic))
    relay = Relay(config)
    assert relay.state is Lifecycle.NEW
    async with relay:
        assert relay.state is Lifecycle.RUNNING
        with pytest.raises(RuntimeError, match="the outbox relay is already running"):
            await relay.start()
        await eventually(lambda: _true(relay.listening and relay.polls > 0), timeout=20)
    assert relay.state is Lifecycle.CLOSED
    assert not relay.listening
    await relay.aclose()  # twice: fine
    await asyncio.gather(relay.aclose(), relay.aclose())
    with pytest.raises(RuntimeError, match="the outbox relay is closed"):
        await relay.start()
    with pytest.raises(RuntimeError, match="closed"):
        async with relay:
            pass


async def test_relay_closed_while_closing_waits_for_the_first_close(
    database_url: str, kafka_bootstrap: str, topic: str
) -> None:
    config = RelayConfig.from_settings(event_settings(database_url, kafka_bootstrap, topic))
    relay = Relay(config)
    await relay.start()
    first = asyncio.create_task(relay.aclose())
    await asyncio.sleep(0)  # the first close is under way
    await relay.aclose()  # returns only once the relay has stopped
    assert first.done()
    assert not relay.listening
    assert all(
        t.get_name() not in {"relay-publish", "relay-housekeeping"} for t in asyncio.all_tasks()
    )


async def test_a_never_started_relay_closes(database_url: str, kafka_bootstrap: str) -> None:
    config = RelayConfig.from_settings(event_settings(database_url, kafka_bootstrap, "t"))
    relay = Relay(config)
    await relay.aclose()
    assert relay.state is Lifecycle.CLOSED


async def test_publisher_refuses_a_second_start_and_closes_twice(kafka_bootstrap: str) -> None:
    publisher = Publisher(ProducerConfig(kafka_bootstrap, {USER_DELETED_TYPE: "t"}))
    async with publisher:
        assert publisher.started
        with pytest.raises(RuntimeError, match="the Kafka publisher is already running"):
            await publisher.start()
    assert not publisher.started
    await publisher.aclose()  # twice: fine
    with pytest.raises(RuntimeError, match="the Kafka publisher is closed"):
        await publisher.start()


async def test_a_publisher_that_cannot_connect_may_start_again(kafka_bootstrap: str) -> None:
    """The relay retries a start that failed (Kafka down): that is not a second start."""
    config = ProducerConfig(f"127.0.0.1:{_free_port()}", {USER_DELETED_TYPE: "t"})
    publisher = Publisher(config)
    for _ in range(2):
        with pytest.raises(Exception, match="Unable to bootstrap"):
            await publisher.start()
        assert not publisher.started
    await publisher.aclose()


async def test_the_guard() -> None:
    guard = LifecycleGuard("the thing")
    assert (guard.state, guard.running) == (Lifecycle.NEW, False)
    with pytest.raises(ValueError, match="no connection"), guard.starting():
        raise ValueError("no connection")
    assert guard.state is Lifecycle.NEW  # a failed start may be tried again
    guard.start()
    assert guard.running
    with pytest.raises(RuntimeError, match="the thing is already running"):
        guard.start()
    closed: list[int] = []

    async def closer() -> None:
        await asyncio.sleep(0.01)
        closed.append(1)

    await asyncio.gather(guard.close(closer), guard.close(closer))
    await guard.close(closer)
    assert closed == [1]
    assert guard.state is Lifecycle.CLOSED
    with pytest.raises(RuntimeError, match="the thing is closed"):
        guard.start()
