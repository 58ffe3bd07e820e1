"""The channel a client builds from a target: round-robin across replicas,
retry policy and keepalive options."""

from __future__ import annotations

import json

from auth_client import AuthClient, ChannelConfig, RetryConfig
from auth_service.api.server import AuthServer
from tests.client.conftest import seed_users
from tests.conftest import eventually, make_settings


async def test_round_robin_spreads_calls_over_every_resolved_address(new_database) -> None:
    # Two replicas that disagree on purpose: only the first one's database has
    # the user, so each answer tells which replica served it.
    first_db, second_db = new_database(), new_database()
    (user,), _ = await seed_users(first_db, 1)
    async with (
        AuthServer(make_settings(first_db)) as first,
        AuthServer(make_settings(second_db)) as second,
    ):
        target = f"ipv4:127.0.0.1:{first.port},127.0.0.1:{second.port}"
        async with AuthClient(target, timeout=5) as client:
            seen: set[bool] = set()

            async def both_replicas_answered() -> bool:
                client.invalidate(user)
                seen.add(await client.user_exists(user))
                return seen == {True, False}

            await eventually(both_replicas_answered, timeout=20)


def test_channel_options_carry_retry_keepalive_and_backoff() -> None:
    config = ChannelConfig(
        keepalive_time=20,
        keepalive_timeout=5,
        reconnect_backoff_max=3,
        retry=RetryConfig(max_attempts=4, initial_backoff=0.1, max_backoff=1),
    )
    options = dict(config.options())
    assert options["grpc.keepalive_time_ms"] == 20_000
    assert options["grpc.keepalive_timeout_ms"] == 5_000
    assert options["grpc.max_reconnect_backoff_ms"] == 3_000
    assert options["grpc.enable_retries"] == 1
    service_config = json.loads(str(options["grpc.service_config"]))
    assert service_config["loadBalancingConfig"] == [{"round_robin": {}}]
    (method_config,) = service_config["methodConfig"]
    assert sorted(n["method"] for n in method_config["name"]) == [
        "BatchUserExists",
        "GetUser",
        "UserExists",
    ]
    assert method_config["retryPolicy"] == {
        "maxAttempts": 4,
        "initialBackoff": "0.100s",
        "maxBackoff": "1.000s",
        "backoffMultiplier": 2.0,
        "retryableStatusCodes": ["UNAVAILABLE"],
    }
