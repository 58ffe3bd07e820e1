"""SyncAuthClient against a real server in this process: the same methods, answers,
errors and guarantees as AuthClient, from many threads without an event loop; a
forked child makes its own client; closing leaves no thread.

The server runs in the test's event loop, so the synchronous code runs in worker
threads (`asyncio.to_thread`) while the loop serves."""

from __future__ import annotations

import asyncio
import inspect
import os
import socket
import sys
import threading
import time
import uuid
from collections import Counter
from typing import Any

import grpc
import pytest
from opentelemetry import trace

from auth_client import (
    AuthClient,
    AuthClientError,
    CacheConfig,
    CircuitOpenError,
    DeadlineExceededError,
    FallbackPolicy,
    InvalidRequestError,
    RolloutMode,
    ServiceUnavailableError,
    SyncAuthClient,
    UserNotFoundError,
    UserState,
)
from auth_client.contract import auth_pb2
from auth_service.api.server import AuthServer
from auth_service.local.embedded import free_port
from tests.client.conftest import REPO, seed_users
from tests.conftest import make_settings
from tests.tracing.conftest import Spans, app_spans, server_spans  # noqa: F401 - fixtures

SCENARIO = REPO / "tests" / "client" / "sync_scenario.py"


class SyncCounter(grpc.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    """Counts the RPCs a SyncAuthClient sends, per method, from any thread."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.batch_sizes: list[int] = []
        self._lock = threading.Lock()

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        with self._lock:
            self.calls[details.method.rsplit("/", 1)[-1]] += 1
            if isinstance(request, auth_pb2.BatchUserExistsRequest):
                self.batch_sizes.append(len(request.user_ids))
        return continuation(details, request)

    @property
    def total(self) -> int:
        return sum(self.calls.values())


def in_threads(count: int, work: Any) -> list[BaseException]:
    """Run work(index) in `count` threads started together; their errors."""
    errors: list[BaseException] = []
    barrier = threading.Barrier(count)

    def run(index: int) -> None:
        try:
            barrier.wait()
            work(index)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return errors


def our_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("auth-client")]


def dead_target() -> str:
    return f"127.0.0.1:{free_port()}"  # nothing listens there


def test_the_sync_client_has_the_async_clients_methods() -> None:
    renamed = {"aclose": "close", "__aenter__": "__enter__", "__aexit__": "__exit__"}
    for name, member in inspect.getmembers(AuthClient, inspect.isfunction):
        if name.startswith("_") and name not in renamed:
            continue
        twin = getattr(SyncAuthClient, renamed.get(name, name))
        assert list(inspect.signature(twin).parameters) == list(
            inspect.signature(member).parameters
        ), name
        assert inspect.iscoroutinefunction(twin) is False, name
    sync_params = inspect.signature(SyncAuthClient.__init__).parameters
    assert list(sync_params) == list(inspect.signature(AuthClient.__init__).parameters)


async def test_threads_share_one_client_and_a_forked_child_makes_its_own(
    server: AuthServer, settings
) -> None:
    """Done-when of issue 29 item 1, in a process of its own (sync_scenario.py): 32
    threads, a fork after use, no thread left after close. With gRPC core's fork
    support as users have it (on by default): this suite turns it off for itself
    (tests/__init__.py), and without it a child's new channel never connects."""
    active, deleted = await seed_users(settings.database_url, 5, 3)
    env = {k: v for k, v in os.environ.items() if k != "GRPC_ENABLE_FORK_SUPPORT"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(SCENARIO),
        server.address,
        ",".join(map(str, active)),
        ",".join(map(str, deleted)),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, err.decode()
    assert '"checks": 96' in out.decode()


async def test_misses_of_many_threads_share_batches_and_coalesce(
    server: AuthServer, settings
) -> None:
    active, _ = await seed_users(settings.database_url, 32 * 20)
    counter = SyncCounter()

    def run() -> None:
        with SyncAuthClient(server.address, timeout=10, interceptors=[counter]) as auth:

            def distinct(index: int) -> None:
                for user_id in active[index * 20 : (index + 1) * 20]:
                    assert auth.user_exists(user_id) is True

            assert in_threads(32, distinct) == []
            batched = counter.total
            assert batched < 32 * 20 / 2  # lookups of different threads share RPCs
            assert max(counter.batch_sizes) > 1

            rounds = [uuid.uuid4() for _ in range(10)]

            def same(_index: int) -> None:
                for user_id in rounds:
                    assert auth.user_exists(user_id) is False

            assert in_threads(32, same) == []
            assert counter.total - batched < 10 * 32 / 4
            stats = auth.stats()
            assert stats.coalesced > 0
            assert stats.cache_misses + stats.cache_hits == 32 * 20 + 32 * 10
            assert stats.rpcs == counter.total

    await asyncio.to_thread(run)
    assert our_threads() == []


async def test_answers_and_errors_are_the_async_clients(
    server: AuthServer, settings, admin_stub
) -> None:
    (alive,), (gone,) = await seed_users(settings.database_url, 1, 1)
    unknown = uuid.uuid4()
    counter = SyncCounter()

    def run() -> None:
        auth = SyncAuthClient(server.address, interceptors=[counter], timeout=5)
        assert repr(auth).endswith("state=new)")
        with auth:
            assert auth.user_exists(str(alive)) is True
            assert auth.user_exists(gone) is False
            assert auth.users_exist([alive, gone, str(unknown)]) == {
                alive: True,
                gone: False,
                unknown: False,
            }
            assert auth.users_exist(iter([alive])) == {alive: True}
            with pytest.raises(UserNotFoundError) as info:
                auth.require_users([alive, gone, unknown])
            assert set(info.value.user_ids) == {gone, unknown}
            with pytest.raises(UserNotFoundError):
                auth.require_user(gone)
            auth.require_user(alive)
            profile = auth.get_user(alive)
            assert profile is not None
            assert profile.id == alive
            assert auth.get_user(gone) is None
            assert auth.user_states([alive, gone, unknown]) == {
                alive: UserState.ACTIVE,
                gone: UserState.DELETED,
                unknown: UserState.NOT_FOUND,
            }
            sent = counter.total
            for bad in ("not-a-uuid", 42, None):
                with pytest.raises(InvalidRequestError):
                    auth.user_exists(bad)  # type: ignore[arg-type]
                with pytest.raises(InvalidRequestError):
                    auth.users_exist([alive, bad])  # type: ignore[list-item]
            with pytest.raises(InvalidRequestError):
                auth.users_exist(str(alive))
            assert counter.total == sent  # malformed ids never reach the network

            hits = auth.stats().cache_hits
            assert auth.user_exists(alive) is True  # answered in this thread
            assert auth.stats().cache_hits == hits + 1
            auth.mark_deleted(alive)
            assert auth.user_exists(alive) is False
            auth.invalidate(alive)
            assert auth.user_exists(alive) is True
            assert counter.total == sent + 1
        auth.close()  # idempotent
        with pytest.raises(RuntimeError, match="closed"):
            auth.user_exists(alive)
        with pytest.raises(RuntimeError, match="closed"):
            auth.start()

    await asyncio.to_thread(run)
    assert our_threads() == []


def test_fallbacks_breaker_and_rollout_modes_without_a_server() -> None:
    target = dead_target()
    reported: list[tuple[tuple[uuid.UUID, ...], str]] = []
    changes: list[tuple[str, str]] = []

    def hook(ids: tuple[uuid.UUID, ...]) -> None:
        reported.append((ids, threading.current_thread().name))

    from auth_client import BreakerConfig  # noqa: PLC0415

    with SyncAuthClient(
        target,
        timeout=0.3,
        breaker=BreakerConfig(fail_max=2, reset_timeout=60),
        on_unverified=hook,
        on_breaker_change=lambda old, new: changes.append((old, new)),
    ) as auth:
        user = uuid.uuid4()
        with pytest.raises(ServiceUnavailableError):
            auth.user_exists(user)
        assert auth.user_exists(user, fallback=FallbackPolicy.FAIL_OPEN) is True
        assert reported[0][0] == (user,)
        assert reported[0][1] != threading.current_thread().name  # not in the caller
        with pytest.raises(CircuitOpenError):
            auth.user_exists(user)
        assert changes == [("closed", "open")]
        with pytest.raises(ServiceUnavailableError):
            auth.get_user(user)  # no fallback for a profile
        stats = auth.stats()
        assert (stats.breaker_state, stats.breaker_opened, stats.fallback_open) == ("open", 1, 1)

    def failing(ids: tuple[uuid.UUID, ...]) -> None:
        raise ValueError("could not record")

    with SyncAuthClient(target, timeout=0.3, on_unverified=failing) as auth:
        with pytest.raises(ValueError, match="could not record"):  # never unrecorded
            auth.user_exists(uuid.uuid4(), fallback=FallbackPolicy.FAIL_OPEN)
    with SyncAuthClient(target, timeout=0.3, rollout=RolloutMode.SHADOW) as auth:
        assert auth.user_exists(uuid.uuid4()) is True
    with SyncAuthClient(target, rollout=RolloutMode.OFF) as auth:
        anyone = uuid.uuid4()
        assert auth.users_exist([anyone]) == {anyone: True}
        assert auth.stats().unchecked == 1
    assert our_threads() == []


async def test_serve_stale_answers_from_an_expired_entry_while_the_server_is_down(
    database_url: str,
) -> None:
    (user,), _ = await seed_users(database_url, 1)
    settings = make_settings(database_url, listen=f"127.0.0.1:{free_port()}")
    auth = SyncAuthClient(
        settings.listen,
        timeout=1,
        fallback=FallbackPolicy.SERVE_STALE,
        cache=CacheConfig(positive_ttl=10, max_stale=100),
    )
    now = [0.0]
    auth._cache.clock = lambda: now[0]  # the cache's own clock, advanced by hand
    async with AuthServer(settings):
        assert await asyncio.to_thread(auth.user_exists, user) is True
    now[0] = 50.0  # expired 40 s ago, within max_stale
    try:
        assert await asyncio.to_thread(auth.user_exists, user) is True
        assert auth.stats().fallback_stale == 1
        with pytest.raises(ServiceUnavailableError):
            await asyncio.to_thread(auth.user_exists, user, fallback=FallbackPolicy.FAIL_CLOSED)
    finally:
        await asyncio.to_thread(auth.close)


def test_a_lookup_ends_by_its_deadline_when_the_server_never_answers() -> None:
    with socket.socket() as silent:  # accepts connections, never speaks HTTP/2
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        target = f"127.0.0.1:{silent.getsockname()[1]}"
        with SyncAuthClient(target, timeout=0.3) as auth:
            started = time.monotonic()
            with pytest.raises(DeadlineExceededError):
                auth.user_exists(uuid.uuid4())
            assert time.monotonic() - started < 10  # no hang (not a timing claim)


def test_closing_fails_lookups_in_flight_without_hanging_and_leaves_no_thread() -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        auth = SyncAuthClient(f"127.0.0.1:{silent.getsockname()[1]}", timeout=30)
        auth.start()
        outcomes: list[object] = []

        def lookup() -> None:
            try:
                outcomes.append(auth.user_exists(uuid.uuid4()))
            except (AuthClientError, RuntimeError) as exc:
                outcomes.append(exc)

        threads = [threading.Thread(target=lookup) for _ in range(8)]
        for thread in threads:
            thread.start()
        time.sleep(0.2)
        auth.close()
        for thread in threads:
            thread.join(10)
        assert not any(t.is_alive() for t in threads)
        assert len(outcomes) == 8
        assert all(isinstance(o, AuthClientError | RuntimeError) for o in outcomes)
    assert our_threads() == []


def test_a_breaker_listener_calling_the_client_fails_instead_of_deadlocking() -> None:
    seen: list[BaseException] = []

    def listener(_old: str, _new: str) -> None:
        try:
            auth.user_exists(uuid.uuid4())
        except RuntimeError as exc:
            seen.append(exc)

    from auth_client import BreakerConfig  # noqa: PLC0415

    auth = SyncAuthClient(
        dead_target(),
        timeout=0.3,
        breaker=BreakerConfig(fail_max=1),
        on_breaker_change=listener,
    )
    with auth:
        with pytest.raises(ServiceUnavailableError):
            auth.user_exists(uuid.uuid4())
    assert len(seen) == 1
    assert "own thread" in str(seen[0])


async def test_a_caller_supplied_channel_is_used_and_left_open(
    server: AuthServer, settings
) -> None:
    (user,), _ = await seed_users(settings.database_url, 1)

    def run() -> None:
        counter = SyncCounter()
        channel = grpc.intercept_channel(grpc.insecure_channel(server.address), counter)
        try:
            with SyncAuthClient(channel=channel) as auth:
                assert auth.user_exists(user) is True
            with SyncAuthClient(channel=channel) as again:
                assert again.user_exists(user) is True
        finally:
            channel.close()
        assert counter.calls == {"UserExists": 2}

    await asyncio.to_thread(run)
    with pytest.raises(ValueError, match="either"):
        SyncAuthClient("127.0.0.1:9", channel=grpc.insecure_channel("127.0.0.1:9"))
    with pytest.raises(ValueError, match="timeout"):
        SyncAuthClient("127.0.0.1:9", timeout=0)


async def test_a_lookup_span_is_a_child_of_the_callers_span(
    app_spans: Spans,  # noqa: F811 - the fixture
    server: AuthServer,
    settings,
) -> None:
    (user,), _ = await seed_users(settings.database_url, 1)
    app = trace.get_tracer("a sync service")

    def run() -> tuple[Any, Any]:
        with SyncAuthClient(server.address, timeout=5) as auth:
            with app.start_as_current_span("insert member") as first:
                auth.require_user(user)
            with app.start_as_current_span("insert again") as again:
                auth.require_user(user)  # a cache hit: still its span while tracing
        return first, again

    first, again = await asyncio.to_thread(run)
    spans = app_spans.named("auth_client.lookup")
    assert [s.parent.span_id for s in spans if s.parent] == [
        first.get_span_context().span_id,
        again.get_span_context().span_id,
    ]
