"""The JSON logs of a real `auth-service serve` process: one line per request at
DEBUG with the request id and the caller, errors always; never a token or an email.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import uuid
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from auth_client.contract import admin_pb2, admin_pb2_grpc, auth_pb2, auth_pb2_grpc
from auth_service.local.embedded import free_port
from tests.helpers import expect_status
from tests.ops.support import Service, clean_env
from tests.security.pki import Authority

ADMIN_TOKEN = f"admin-{uuid.uuid4().hex}"
READER_TOKEN = f"reader-{uuid.uuid4().hex}"
WRONG_TOKEN = f"wrong-{uuid.uuid4().hex}"


def _serve_env(database_url: str, port: int, level: str) -> dict[str, str]:
    return clean_env(
        DATABASE_URL=database_url,
        GRPC_LISTEN=f"127.0.0.1:{port}",
        ADMIN_TOKENS=ADMIN_TOKEN,
        AUTH_TOKENS=f"messaging users:read {READER_TOKEN}",
        RELAY_ENABLED="false",
        LOG_LEVEL=level,
        LOG_FORMAT="json",
    )


async def _health_ok(target: str) -> bool:
    async with grpc.aio.insecure_channel(target) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=2
        )
    return reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_json_request_lines_have_request_id_and_caller_and_no_secrets(
    database_url: str,
) -> None:
    port = free_port()
    target = f"127.0.0.1:{port}"
    local_part = f"private.{uuid.uuid4().hex[:10]}"
    email = f"{local_part}@example.com"
    admin_md = (("authorization", f"Bearer {ADMIN_TOKEN}"),)
    reader_md = (("authorization", f"Bearer {READER_TOKEN}"), ("x-request-id", "req-read-1"))
    async with Service("auth-service", "serve", env=_serve_env(database_url, port, "DEBUG")) as srv:
        await srv.wait_until_up(lambda: _health_ok(target))
        async with grpc.aio.insecure_channel(target) as channel:
            admin = admin_pb2_grpc.UserAdminServiceStub(channel)
            reads = auth_pb2_grpc.AuthServiceStub(channel)
            created = await admin.CreateUser(
                admin_pb2.CreateUserRequest(username="loggy", email=email),
                metadata=(*admin_md, ("x-request-id", "req-create-1")),
                timeout=10,
            )
            await reads.UserExists(
                auth_pb2.UserExistsRequest(user_id=created.user.id), metadata=reader_md, timeout=10
            )
            await expect_status(
                reads.GetUser(
                    auth_pb2.GetUserRequest(user_id=str(uuid.uuid4())),
                    metadata=reader_md,
                    timeout=10,
                ),
                grpc.StatusCode.NOT_FOUND,
            )
            # A wrong token carrying the email as a username: neither may be logged.
            await expect_status(
                admin.CreateUser(
                    admin_pb2.CreateUserRequest(username=email, email=email),
                    metadata=(("authorization", f"Bearer {WRONG_TOKEN}"),),
                    timeout=10,
                ),
                grpc.StatusCode.UNAUTHENTICATED,
            )
            # Invalid input from the admin (an email where a username belongs).
            await expect_status(
                admin.CreateUser(
                    admin_pb2.CreateUserRequest(username=email, email=email),
                    metadata=(*admin_md, ("x-request-id", "req-bad-1")),
                    timeout=10,
                ),
                grpc.StatusCode.INVALID_ARGUMENT,
            )
            await admin.DeleteUser(
                admin_pb2.DeleteUserRequest(user_id=created.user.id), metadata=admin_md, timeout=10
            )
        assert await srv.stop() == 0
        text = srv.output()
        lines = srv.json_lines()  # every line is a JSON object

    assert lines
    for line in lines:
        assert {"time", "level", "logger", "message"} <= set(line)
    calls = [line for line in lines if "duration_ms" in line]
    by_id = {line["request_id"]: line for line in calls}
    assert by_id["req-create-1"]["caller"] == "admin"
    assert by_id["req-create-1"]["method"] == "CreateUser"
    assert by_id["req-create-1"]["service"] == "auth.v1.UserAdminService"
    assert by_id["req-create-1"]["code"] == "OK"
    assert by_id["req-create-1"]["level"] == "debug"
    assert by_id["req-read-1"]["caller"] == "messaging"
    assert {c["code"] for c in calls if c["request_id"] == "req-read-1"} == {"OK", "NOT_FOUND"}
    assert by_id["req-bad-1"]["code"] == "INVALID_ARGUMENT"
    # One line per call (six calls), each with a request id and a caller; calls
    # without an x-request-id header get a generated one.
    assert len(calls) == 6
    assert all(c["request_id"] and c["caller"] for c in calls)
    denied = [c for c in calls if c["code"] == "UNAUTHENTICATED"]
    assert len(denied) == 1
    assert denied[0]["caller"] == "anonymous"
    assert any(c["method"] == "DeleteUser" and c["code"] == "OK" for c in calls)

    for secret in (ADMIN_TOKEN, READER_TOKEN, WRONG_TOKEN, email, local_part):
        assert secret not in text, secret


async def test_json_logs_stay_json_when_grpc_core_writes_its_own_lines(
    database_url: str, tmp_path: Path
) -> None:
    """A failed TLS handshake (any peer can cause one) makes gRPC core write a plain
    text line to stderr; with LOG_FORMAT=json it reaches the log as a JSON object."""
    ca = Authority("logs-test-ca")
    cert, key = ca.issue("auth-service", server=True).write(tmp_path, "server")
    port = free_port()
    env = {
        **_serve_env(database_url, port, "INFO"),
        "TLS_CERT_FILE": str(cert),
        "TLS_KEY_FILE": str(key),
    }
    async with Service("auth-service", "serve", env=env) as srv:
        tls = grpc.ssl_channel_credentials(root_certificates=ca.pem)
        target = f"127.0.0.1:{port}"

        async def serving() -> bool:
            async with grpc.aio.secure_channel(target, tls) as channel:
                reply = await health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(), timeout=2
                )
            return reply.status == health_pb2.HealthCheckResponse.SERVING

        await srv.wait_until_up(serving)
        for _ in range(3):  # plaintext against TLS: the server's handshake fails
            with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
                sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
                with contextlib.suppress(OSError):
                    sock.recv(100)
        await asyncio.sleep(1.0)
        assert await srv.stop() == 0
        raw = srv.output().splitlines()
    lines = [json.loads(line) for line in raw if line.strip()]  # each one a JSON object
    assert all(isinstance(line, dict) for line in lines)
    core = [line for line in lines if line["logger"] == "grpc.core"]
    assert core, raw  # gRPC core did speak, and was wrapped
    assert {"time", "level", "message"} <= set(core[0])
