"""Every owner of a resource has one lifecycle (auth_service/lifecycle.py): new ->
running -> closed; a second start is refused with a clear error (it used to leak a
task or a socket), `aclose()` may be called any number of times, and a closed owner
cannot be started again. Real PostgreSQL; real sockets."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg
import pytest
from grpc_health.v1._async import HealthServicer

from auth_service.api.callers import TokenFile
from auth_service.api.health import HealthMonitor
from auth_service.api.metrics_endpoint import MetricsServer
from auth_service.api.server import AuthServer
from auth_service.errors import UnavailableError
from auth_service.lifecycle import Lifecycle, Owner
from auth_service.store.erasure import ErasureJob
from auth_service.store.lookup import StateLookup
from auth_service.store.pool import Budget
from auth_service.store.state_cache import StateCache
from auth_service.store.user_changes import UserChangeFeed
from auth_service.store.users import UserRepository
from tests.conftest import make_settings


async def _one_lifecycle(owner: Owner | AuthServer) -> None:
    await owner.start()
    with pytest.raises(RuntimeError, match="already running"):
        await owner.start()
    await owner.aclose()
    await owner.aclose()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        await owner.start()


async def test_metrics_endpoint_token_file_and_health_monitor(
    tmp_path: Path, database_url: str
) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("")
    owners: list[Callable[[], Owner]] = [
        lambda: MetricsServer("127.0.0.1:0"),
        lambda: TokenFile(tokens, static=[], apply=lambda _r: None, interval=0.05),
        lambda: HealthMonitor(HealthServicer(), database_url, interval=0.05),
        lambda: UserChangeFeed(database_url, StateCache(), index_max_users=10),
    ]
    for make in owners:
        owner = make()
        assert owner.state is Lifecycle.NEW
        await _one_lifecycle(owner)
        assert owner.state is Lifecycle.CLOSED


async def test_erasure_job(database_url: str) -> None:
    pool = await asyncpg.create_pool(database_url, min_size=0, max_size=1)
    try:
        await _one_lifecycle(ErasureJob(pool, retention_s=0, interval_s=0.05))
    finally:
        await pool.close()


async def test_a_server_starts_once_and_stops_any_number_of_times(database_url: str) -> None:
    server = AuthServer(make_settings(database_url))
    await _one_lifecycle(server)
    await server.wait_closed()


async def test_closing_an_owner_that_never_started(database_url: str) -> None:
    closers: list[Callable[[], Awaitable[None]]] = [
        MetricsServer("127.0.0.1:0").aclose,
        UserChangeFeed(database_url, StateCache()).aclose,
        AuthServer(make_settings(database_url)).stop,
    ]
    for close in closers:
        await close()
        await close()


async def test_state_lookups_refuse_queries_once_closed(database_url: str) -> None:
    """A closed StateLookup answers what memory has and refuses lookups that need a
    query (UNAVAILABLE), instead of queueing them for a query that never runs."""
    pool = await asyncpg.create_pool(database_url, min_size=0, max_size=1)
    try:
        lookup = StateLookup(UserRepository(pool))
        await _one_lifecycle(lookup)  # type: ignore[arg-type]
        with pytest.raises(UnavailableError, match="shutting down"):
            await lookup.state(str(uuid.uuid4()), Budget(1.0))
    finally:
        await pool.close()
