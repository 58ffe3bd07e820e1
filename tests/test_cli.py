"""`auth-service users create|get|delete` against a real server."""

from __future__ import annotations

import asyncio
import json
import os
import sys

from auth_service.api.server import AuthServer
from auth_service.config.tokens import parse_tokens
from auth_service.local.embedded import free_port
from tests.conftest import make_settings
from tests.helpers import ADMIN_TOKEN
from tests.ops.support import clean_env, run_cli


async def _cli(*args: str, token: str | None = ADMIN_TOKEN, target: str) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTH_SERVICE_")}
    env["AUTH_SERVICE_TARGET"] = target
    if token:
        env["AUTH_SERVICE_TOKEN"] = token
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "auth_service",
        "users",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_create_get_delete_round_trip(server) -> None:
    target = server.address
    code, out, err = await _cli(
        "create", "judy", "--display-name", "Judy J", "--email", "j@example.com", target=target
    )
    assert code == 0, err
    created = json.loads(out)
    assert created["username"] == "judy"
    assert created["display_name"] == "Judy J"
    assert "email" not in created

    code, out, _ = await _cli("get", created["id"], target=target)
    assert code == 0
    assert json.loads(out)["id"] == created["id"]

    code, out, _ = await _cli("delete", created["id"], target=target)
    assert code == 0
    deleted = json.loads(out)
    assert deleted["user_id"] == created["id"]
    assert deleted["already_deleted"] is False

    code, _, err = await _cli("get", created["id"], target=target)
    assert code == 1
    assert "NOT_FOUND" in err


async def test_flags_override_environment(server) -> None:
    env_target = "127.0.0.1:1"  # nothing listens there
    code, out, err = await _cli(
        "--target",
        server.address,
        "--token",
        ADMIN_TOKEN,
        "create",
        "kim",
        token="wrong-token-0000000000",
        target=env_target,
    )
    assert code == 0, err
    assert json.loads(out)["username"] == "kim"


async def test_missing_token_is_reported_with_a_hint(server) -> None:
    """#29: a first try without a token said only `UNAUTHENTICATED: missing or
    malformed bearer token`; the hint names the flag and the variable."""
    code, out, err = await _cli("create", "leo", token=None, target=server.address)
    assert code == 1
    assert out == ""
    error, hint = err.strip().splitlines()
    assert error.startswith("error: UNAUTHENTICATED: ")
    assert hint.startswith("hint: no token was sent: pass --token TOKEN or set AUTH_SERVICE_TOKEN")


async def test_an_unknown_token_and_a_token_without_the_scope_get_hints(database_url) -> None:
    reader = "reader-token-0123456789abcdef"
    settings = make_settings(
        database_url, auth_tokens=tuple(parse_tokens(f"reporting users:read {reader}"))
    )
    async with AuthServer(settings) as server:
        code, _, err = await _cli(
            "create", "leo", token="unknown-token-0123456789", target=server.address
        )
        assert code == 1
        assert "error: UNAUTHENTICATED" in err
        assert "hint: the server does not know the token from --token / AUTH_SERVICE_TOKEN" in err

        code, _, err = await _cli("create", "leo", token=reader, target=server.address)
        assert code == 1
        assert "error: PERMISSION_DENIED" in err
        assert "hint: the token's caller lacks the scope: create and delete need users:admin" in err


async def test_no_server_at_the_target_gets_a_hint() -> None:
    nowhere = f"127.0.0.1:{free_port()}"
    code, _, err = await _cli("get", "0" * 8, "--timeout", "5", target=nowhere)
    assert code == 1
    assert "error: UNAVAILABLE" in err
    assert f"hint: is auth-service running at {nowhere}? (--target HOST:PORT" in err


async def test_connection_options_are_accepted_after_the_action(server) -> None:
    """As users type them: `users create dave --token T --target H:P`."""
    nowhere = f"127.0.0.1:{free_port()}"  # the environment points elsewhere
    code, out, err = await _cli(
        "create", "dave", "--target", server.address, "--token", ADMIN_TOKEN, target=nowhere
    )
    assert code == 0, err
    user_id = json.loads(out)["id"]
    code, out, err = await _cli(
        "get", user_id, "--timeout", "5", "--target", server.address, target=nowhere
    )
    assert code == 0, err
    assert json.loads(out)["username"] == "dave"
    # Before the action still works, and a flag after it wins.
    code, out, err = await _cli(
        "--target", nowhere, "get", user_id, "--target", server.address, target=nowhere
    )
    assert code == 0, err
    code, _, err = await _cli(
        "get", user_id, "--ca-file", "/nonexistent.pem", target=server.address
    )
    assert code != 0
    assert "unrecognized arguments" not in err


async def test_health_for_an_unknown_service_says_which_services_exist(server) -> None:
    code, out, _ = await run_cli(
        "health", "--target", server.address, "--service", "nope", env=clean_env()
    )
    assert code == 1
    assert out.startswith("NOT_FOUND: no health status for service 'nope'")
    assert "auth.v1.AuthService" in out


async def test_relay_without_kafka_names_what_relay_needs() -> None:
    env = clean_env(DATABASE_URL="postgresql://auth@127.0.0.1:5999/auth")
    code, _, err = await run_cli("relay", env=env)
    assert code == 2
    assert "KAFKA_BOOTSTRAP_SERVERS: is required by `auth-service relay`" in err
    assert "RELAY_ENABLED" not in err  # that advice is for `serve`
