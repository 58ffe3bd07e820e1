"""Bursts and failures with many calls in flight, against real servers: a burst far
beyond what one connection carries is served, not refused; a server dying under
100 concurrent callers opens the breaker once."""

from __future__ import annotations

import asyncio
import signal
import uuid

import pytest

from auth_client import AuthClient, BreakerConfig, ServiceUnavailableError
from auth_service.api.server import AuthServer
from tests.client.conftest import ServeProcess, seed_users
from tests.helpers import ADMIN_TOKEN

pytestmark = pytest.mark.slow


async def test_5000_concurrent_get_user_calls_on_one_client_are_all_served(
    server: AuthServer, database_url: str
) -> None:
    """A healthy server and a deadline long enough for the machine to serve them
    all: every call succeeds and the breaker stays closed (the server refuses
    streams beyond its per-connection bound; the client must not send them)."""
    ids, _ = await seed_users(database_url, 5000)
    async with AuthClient(server.address, timeout=20.0) as client:
        users = await asyncio.gather(*(client.get_user(i) for i in ids))
        stats = client.stats()
    assert sum(user is not None for user in users) == 5000
    assert stats.breaker_state == "closed"
    assert stats.breaker_opened == 0
    assert stats.unavailable == 0


async def test_a_server_killed_under_100_callers_opens_the_breaker_once(
    serve_process: ServeProcess,
) -> None:
    changes: list[tuple[str, str]] = []
    async with AuthClient(
        serve_process.address,
        token=ADMIN_TOKEN,
        timeout=30.0,
        breaker=BreakerConfig(fail_max=5, reset_timeout=60.0),
        on_breaker_change=lambda old, new: changes.append((old, new)),
    ) as client:
        assert await client.user_exists(uuid.uuid4()) is False  # connected
        serve_process.signal(signal.SIGSTOP)  # calls pile up in flight
        calls = [asyncio.ensure_future(client.get_user(uuid.uuid4())) for _ in range(100)]
        await asyncio.sleep(1.0)
        serve_process.kill()  # every one of them fails at once
        results = await asyncio.gather(*calls, return_exceptions=True)
        stats = client.stats()
    assert all(isinstance(r, ServiceUnavailableError) for r in results)
    assert stats.breaker_state == "open"
    assert stats.breaker_opened == 1
    assert changes == [("closed", "open")]
