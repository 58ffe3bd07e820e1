"""Clients nobody here wrote: `buf curl` with either reflection protocol, and the
standard health service's `List`, against a real `auth-service serve`."""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from pathlib import Path

import pytest

from auth_service.local.embedded import free_port
from tests.ops.support import Service, clean_env, run_cli

BUF = Path(sys.executable).parent / "buf"
TOKEN = f"admin-{uuid.uuid4().hex}"

pytestmark = pytest.mark.skipif(not BUF.exists(), reason="buf-bin not installed")


async def _buf_curl(target: str, method: str, body: dict[str, object], *flags: str) -> object:
    proc = await asyncio.create_subprocess_exec(
        str(BUF),
        "curl",
        "--protocol",
        "grpc",
        "--http2-prior-knowledge",
        "--emit-defaults",
        *flags,
        "-d",
        json.dumps(body),
        f"http://{target}/{method}",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, (out + err).decode()
    return json.loads(out)


async def test_reflection_v1_and_v1alpha_and_health_list(database_url: str) -> None:
    port = free_port()
    target = f"127.0.0.1:{port}"
    env = clean_env(
        DATABASE_URL=database_url,
        GRPC_LISTEN=target,
        ADMIN_TOKENS=TOKEN,
        RELAY_ENABLED="false",
        LOG_FORMAT="json",
    )
    auth = ("-H", f"authorization: Bearer {TOKEN}")
    async with Service("auth-service", "serve", env=env) as srv:

        async def up() -> bool:
            code, _, _ = await run_cli("health", "--target", target, env=clean_env())
            return code == 0

        await srv.wait_until_up(up)
        user = str(uuid.uuid4())
        for protocol in ("grpc-v1", "grpc-v1alpha"):
            reply = await _buf_curl(
                target,
                "auth.v1.AuthService/UserExists",
                {"user_id": user},
                "--reflect-protocol",
                protocol,
                *auth,
            )
            assert reply == {"exists": False, "state": "USER_STATE_NOT_FOUND"}

        listed = await _buf_curl(
            target, "grpc.health.v1.Health/List", {}, "--reflect-protocol", "grpc-v1"
        )
        assert listed == {
            "statuses": {
                name: {"status": "SERVING"}
                for name in ("", "auth.v1.AuthService", "auth.v1.UserAdminService")
            }
        }
        assert await srv.stop() == 0
        lines = srv.json_lines()
    # Anyone may call health and reflection without a token: nothing they do is an
    # ERROR (Health/List used to log a NotImplementedError traceback).
    assert [line for line in lines if line["level"] == "error"] == []
