"""The public surface: names, the error tree, configuration checks, id
validation without network calls, lifecycle, and `channel=`."""

from __future__ import annotations

import asyncio
import uuid

import grpc
import pytest

import auth_client
from auth_client import (
    AuthClient,
    AuthClientError,
    BatchConfig,
    BreakerConfig,
    CacheConfig,
    ChannelConfig,
    CircuitOpenError,
    DeadlineExceededError,
    FallbackPolicy,
    InvalidRequestError,
    PermissionDeniedError,
    RetryConfig,
    RolloutMode,
    ServiceUnavailableError,
    TLSConfig,
    UnauthenticatedError,
    UserNotFoundError,
)
from auth_client.contract import admin_pb2
from auth_service.api.server import AuthServer
from tests.client.conftest import CountingInterceptor, seed_users
from tests.conftest import ADMIN_MD


def test_public_names_are_pinned() -> None:
    assert sorted(auth_client.__all__) == [
        "AuthClient",
        "AuthClientError",
        "BatchConfig",
        "BreakerConfig",
        "CacheConfig",
        "ChannelConfig",
        "CircuitOpenError",
        "ClientStats",
        "DeadlineExceededError",
        "FallbackPolicy",
        "InvalidRequestError",
        "OnUnverified",
        "PermissionDeniedError",
        "ReplicaConfig",
        "ReplicaLoadError",
        "ReplicaStats",
        "RetryConfig",
        "RolloutMode",
        "ServiceUnavailableError",
        "SyncAuthClient",
        "TLSConfig",
        "UnauthenticatedError",
        "User",
        "UserId",
        "UserNotFoundError",
        "UserReferenceError",
        "UserState",
        "create_channel",
    ]
    for name in auth_client.__all__:
        assert getattr(auth_client, name) is not None
    for method in (
        "user_exists",
        "get_user",
        "users_exist",
        "require_user",
        "require_users",
        "invalidate",
        "mark_deleted",
        "user_states",
        "stats",
        "replica_stats",
        "aclose",
    ):
        assert callable(getattr(AuthClient, method))


def test_error_tree() -> None:
    for cls in (
        UserNotFoundError,
        InvalidRequestError,
        PermissionDeniedError,
        ServiceUnavailableError,
    ):
        assert issubclass(cls, AuthClientError)
    assert issubclass(UnauthenticatedError, PermissionDeniedError)
    assert issubclass(CircuitOpenError, ServiceUnavailableError)
    assert issubclass(DeadlineExceededError, ServiceUnavailableError)
    assert issubclass(auth_client.UserReferenceError, UserNotFoundError)
    assert issubclass(auth_client.ReplicaLoadError, ServiceUnavailableError)
    assert ServiceUnavailableError.retriable
    assert not UserNotFoundError.retriable
    assert not InvalidRequestError.retriable


def test_user_not_found_names_the_missing_ids() -> None:
    ids = [uuid.uuid4() for _ in range(12)]
    error = UserNotFoundError(ids)
    assert error.user_ids == tuple(ids)
    assert str(ids[0]) in str(error)
    assert "and 2 more" in str(error)


@pytest.mark.parametrize(
    "make",
    [
        lambda: CacheConfig(max_size=-1),
        lambda: CacheConfig(positive_ttl=-1),
        lambda: CacheConfig(negative_ttl=float("nan")),
        lambda: BreakerConfig(fail_max=0),
        lambda: BreakerConfig(reset_timeout=0),
        lambda: BatchConfig(max_ids=1001),
        lambda: BatchConfig(window=-0.1),
        lambda: RetryConfig(max_attempts=1),
        lambda: ChannelConfig(keepalive_time=0),
        lambda: TLSConfig(certificate_chain=b"x"),
        AuthClient,
        lambda: AuthClient("a:1", timeout=0),
    ],
)
def test_invalid_configuration_is_refused(make) -> None:
    with pytest.raises(ValueError):
        make()


async def test_target_and_channel_are_exclusive() -> None:
    async with grpc.aio.insecure_channel("127.0.0.1:9") as channel:
        with pytest.raises(ValueError, match="either"):
            AuthClient("127.0.0.1:9", channel=channel)
        with pytest.raises(ValueError, match="tls"):
            AuthClient(channel=channel, tls=TLSConfig())


def test_configs_are_frozen() -> None:
    with pytest.raises(AttributeError):
        CacheConfig().positive_ttl = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "not-a-uuid",
        "12345678123456781234567812345678",
        "{12345678-1234-5678-1234-567812345678}",
        "12345678-1234-5678-1234-56781234567g",
        42,
        None,
        b"12345678-1234-5678-1234-567812345678",
    ],
)
async def test_malformed_ids_fail_before_any_network_call(bad) -> None:
    counter = CountingInterceptor()
    # Nothing listens on port 9: any RPC would fail with UNAVAILABLE instead.
    async with AuthClient("127.0.0.1:9", interceptors=[counter]) as client:
        for call in (
            lambda: client.user_exists(bad),
            lambda: client.require_user(bad),
            lambda: client.get_user(bad),
            lambda: client.users_exist([uuid.uuid4(), bad]),
            lambda: client.require_users([bad]),
        ):
            with pytest.raises(InvalidRequestError) as info:
                await call()
            assert repr(bad) not in str(info.value) or bad in (None, 42)
        with pytest.raises(InvalidRequestError):
            client.invalidate(bad)
        with pytest.raises(InvalidRequestError):
            await client.users_exist(str(uuid.uuid4()))  # one id, not a collection
    assert counter.total == 0


async def test_empty_collections_need_no_call() -> None:
    async with AuthClient("127.0.0.1:9") as client:
        assert await client.users_exist([]) == {}
        await client.require_users([])


async def test_a_cache_hit_completes_without_suspending(make_client, settings) -> None:
    (user,), _ = await seed_users(settings.database_url, 1)
    client: AuthClient = await make_client(fallback=FallbackPolicy.FAIL_CLOSED)
    assert await client.user_exists(user) is True
    for key in (user, str(user)):
        coro = client.user_exists(key)
        with pytest.raises(StopIteration) as info:
            coro.send(None)
        assert info.value.value is True


async def test_caller_supplied_channel_is_used_and_left_open(server: AuthServer, settings) -> None:
    (user,), _ = await seed_users(settings.database_url, 1)
    counter = CountingInterceptor()
    async with grpc.aio.insecure_channel(server.address, interceptors=[counter]) as channel:
        async with AuthClient(channel=channel) as client:
            assert await client.user_exists(user) is True
            assert (await client.get_user(user)).id == user  # type: ignore[union-attr]
        # The client did not close the caller's channel.
        async with AuthClient(channel=channel, rollout=RolloutMode.ENFORCE) as again:
            assert await again.user_exists(user) is True
    assert counter.calls == {"UserExists": 2, "GetUser": 1}


async def test_get_user_returns_the_public_profile(make_client, admin_stub) -> None:
    reply = await admin_stub.CreateUser(
        admin_pb2.CreateUserRequest(username="dana", display_name="Dana D", email="d@example.com"),
        metadata=ADMIN_MD,
    )
    client: AuthClient = await make_client()
    user = await client.get_user(reply.user.id)
    assert user is not None
    assert (user.id, user.username, user.display_name) == (
        uuid.UUID(reply.user.id),
        "dana",
        "Dana D",
    )
    assert user.created_at.tzinfo is not None
    assert not hasattr(user, "email")
    assert await client.user_exists(user.id) is True  # filled the existence cache
    await admin_stub.DeleteUser(
        admin_pb2.DeleteUserRequest(user_id=reply.user.id), metadata=ADMIN_MD
    )
    assert await client.get_user(user.id) is None


async def test_a_closed_client_cannot_be_reused(server: AuthServer) -> None:
    client = AuthClient(server.address)
    async with client:
        assert await client.user_exists(uuid.uuid4()) is False
    await client.aclose()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        await client.user_exists(uuid.uuid4())
    with pytest.raises(RuntimeError, match="closed"):
        async with client:
            pass


async def test_closing_fails_lookups_in_flight_without_hanging(make_client) -> None:
    client: AuthClient = await make_client()
    lookups = [asyncio.create_task(client.user_exists(uuid.uuid4())) for _ in range(5)]
    await asyncio.sleep(0)
    await client.aclose()
    results = await asyncio.gather(*lookups, return_exceptions=True)
    for result in results:
        assert result is False or isinstance(result, AuthClientError)


def test_the_token_never_shows_in_repr() -> None:
    client = AuthClient("127.0.0.1:9", token="s3cret-token-value-123")
    assert "s3cret" not in repr(client)
    assert "s3cret" not in repr(TLSConfig(private_key=b"s3cret", certificate_chain=b"c"))
