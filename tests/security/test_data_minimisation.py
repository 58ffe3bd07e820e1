"""Nothing sensitive leaves the service: a real `auth-service serve` at DEBUG,
admin calls carrying emails, calls with stolen or wrong tokens; then the whole log
output is searched for tokens, emails and request bodies."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from auth_client.contract import admin_pb2, admin_pb2_grpc, auth_pb2, auth_pb2_grpc
from auth_service.local.embedded import free_port
from tests.security.conftest import ADMIN, READER, TOKEN_LINES, md

REPO = Path(__file__).resolve().parents[2]
EMAIL = "very.private.person@example.org"
BAD_EMAIL = "not an address but private@example.org"
WRONG_TOKEN = "stolen-or-wrong-token-4e6f7a8b9c"
USERNAME = "marker_user_5d1c"
DISPLAY = "Display Marker 8a2e"


async def wait_serving(address: str, proc: subprocess.Popen[bytes]) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    async with grpc.aio.insecure_channel(address) as ch:
        health = health_pb2_grpc.HealthStub(ch)
        while True:
            assert proc.poll() is None, "auth-service serve exited"
            with contextlib.suppress(grpc.aio.AioRpcError):
                reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            assert loop.time() < deadline, "auth-service serve did not become healthy"
            await asyncio.sleep(0.1)


async def exercise(address: str) -> None:
    async with grpc.aio.insecure_channel(address) as ch:
        admin = admin_pb2_grpc.UserAdminServiceStub(ch)
        auth = auth_pb2_grpc.AuthServiceStub(ch)
        request = admin_pb2.CreateUserRequest(username=USERNAME, display_name=DISPLAY, email=EMAIL)
        created = (await admin.CreateUser(request, metadata=md(ADMIN), timeout=10)).user
        # The profile never carries the email.
        assert "email" not in {f.name for f, _ in created.ListFields()}
        got = await auth.GetUser(
            auth_pb2.GetUserRequest(user_id=created.id), metadata=md(READER), timeout=10
        )
        assert EMAIL not in str(got)
        assert not hasattr(got.user, "email")

        async def refused(call: object) -> None:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await call  # type: ignore[misc]
            for secret in (EMAIL, BAD_EMAIL, WRONG_TOKEN, READER, ADMIN):
                assert secret not in (info.value.details() or "")

        # Taken username (ALREADY_EXISTS), invalid email (INVALID_ARGUMENT), a wrong
        # token (UNAUTHENTICATED), a reader on the admin API (PERMISSION_DENIED).
        await refused(admin.CreateUser(request, metadata=md(ADMIN), timeout=10))
        bad = admin_pb2.CreateUserRequest(username="other", display_name=DISPLAY, email=BAD_EMAIL)
        await refused(admin.CreateUser(bad, metadata=md(ADMIN), timeout=10))
        await refused(admin.CreateUser(request, metadata=md(WRONG_TOKEN), timeout=10))
        await refused(admin.CreateUser(request, metadata=md(READER), timeout=10))
        await refused(
            auth.UserExists(
                auth_pb2.UserExistsRequest(user_id=created.id),
                metadata=(("authorization", f"Basic {WRONG_TOKEN}"),),
                timeout=10,
            )
        )
        await refused(
            auth.UserExists(
                auth_pb2.UserExistsRequest(user_id=EMAIL), metadata=md(READER), timeout=10
            )
        )
        await admin.DeleteUser(
            admin_pb2.DeleteUserRequest(user_id=created.id), metadata=md(ADMIN), timeout=10
        )


async def test_logs_never_carry_tokens_emails_or_request_bodies(database_url: str) -> None:
    address = f"127.0.0.1:{free_port()}"
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "GRPC_LISTEN": address,
        "AUTH_TOKENS": TOKEN_LINES,
        "LOG_LEVEL": "DEBUG",
        "LOG_FORMAT": "json",
        "RELAY_ENABLED": "false",
        "SHUTDOWN_GRACE_S": "1",
    }
    with tempfile.TemporaryFile() as log:
        with subprocess.Popen(
            [sys.executable, "-m", "auth_service", "serve"],
            env=env,
            cwd=REPO,
            stdout=log,
            stderr=log,
        ) as proc:
            try:
                await wait_serving(address, proc)
                await exercise(address)
            finally:
                proc.send_signal(signal.SIGTERM)
                assert proc.wait(30) == 0
        log.seek(0)
        text = log.read().decode("utf-8", errors="replace")

    assert "listening on" in text  # the capture works
    # The caller's name does appear, also when it was refused.
    assert "CreateUser denied: caller lacks the users:admin scope (caller messaging" in text
    for secret in (READER, ADMIN, WRONG_TOKEN, EMAIL, BAD_EMAIL, "example.org", DISPLAY, USERNAME):
        assert secret not in text, f"{secret!r} found in the server's log"
    # Token fragments neither (e.g. a prefix kept "for debugging").
    for token in (READER, ADMIN, WRONG_TOKEN):
        assert token[:12] not in text
