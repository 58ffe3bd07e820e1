"""Counters: readable in code and exported through prometheus-client, with
several clients in one process."""

from __future__ import annotations

import asyncio
import contextlib
import uuid

from prometheus_client import REGISTRY, generate_latest

from auth_client import AuthClient, BreakerConfig, FallbackPolicy
from auth_service.api.server import AuthServer
from tests.client.conftest import seed_users


def sample(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


async def test_stats_count_what_happened(make_client, server: AuthServer, settings) -> None:
    (user,), _ = await seed_users(settings.database_url, 1)
    client: AuthClient = await make_client(
        breaker=BreakerConfig(fail_max=1, reset_timeout=600), fallback=FallbackPolicy.SERVE_STALE
    )
    await asyncio.gather(*(client.user_exists(user) for _ in range(10)))  # 1 RPC, 9 coalesced
    assert await client.user_exists(user) is True  # hit
    await client.users_exist([uuid.uuid4(), uuid.uuid4()])  # 1 batch of 2

    await server.stop()
    for _ in range(2):  # the first trips the breaker, the second fails fast
        with contextlib.suppress(Exception):
            await client.user_exists(uuid.uuid4())

    stats = client.stats()
    assert stats.cache_hits == 1
    assert stats.cache_misses == 10 + 2 + 2
    assert stats.coalesced == 9
    assert stats.rpcs == 3
    assert stats.ids_sent == 1 + 2 + 1
    assert stats.cache_size == 3
    assert stats.breaker_state == "open"
    assert stats.breaker_opened == 1
    assert stats.unavailable == 2
    assert stats.as_dict()["rpcs"] == 3


async def test_prometheus_export_sums_clients_by_name_without_duplicate_registration(
    server: AuthServer,
) -> None:
    name = f"svc-{uuid.uuid4().hex[:8]}"
    other = f"svc-{uuid.uuid4().hex[:8]}"
    async with (
        AuthClient(server.address, name=name) as a,
        AuthClient(server.address, name=name) as b,
        AuthClient(server.address, name=other) as c,
    ):
        uid = uuid.uuid4()
        for client in (a, b, c):
            await client.user_exists(uid)
            await client.user_exists(uid)

        assert sample("auth_client_rpcs_total", client=name) == 2
        assert sample("auth_client_cache_hits_total", client=name) == 2
        assert sample("auth_client_rpcs_total", client=other) == 1
        assert sample("auth_client_breaker_state", client=name, state="closed") == 2
        assert sample("auth_client_cache_entries", client=other) == 1
        text = generate_latest(REGISTRY).decode()
        assert text.count("# TYPE auth_client_rpcs_total counter") == 1

    # Closed clients are no longer exported.
    assert sample("auth_client_rpcs_total", client=name) is None
