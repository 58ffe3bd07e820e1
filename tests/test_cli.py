"""`auth-service users create|get|delete` against a real server."""

from __future__ import annotations

import asyncio
import json
import os
import sys

from tests.helpers import ADMIN_TOKEN


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


async def test_missing_token_is_reported(server) -> None:
    code, out, err = await _cli("create", "leo", token=None, target=server.address)
    assert code == 1
    assert out == ""
    assert "UNAUTHENTICATED" in err
