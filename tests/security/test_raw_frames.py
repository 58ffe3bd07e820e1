"""Malformed gRPC on the wire (raw HTTP/2 via `h2`): each request gets a precise
status or a connection error, and the server keeps serving.

Most of these never reach the service's code; where gRPC core answers by itself the
expected status is what grpcio 1.85 measurably does (documented in
docs/security.md), so a grpcio upgrade that changes it fails here first.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from auth_client.contract import auth_pb2
from tests.security.conftest import READER
from tests.security.h2raw import frame, send, send_raw_bytes

if TYPE_CHECKING:
    from auth_service.api.server import AuthServer

GOOD = auth_pb2.UserExistsRequest(
    user_id="00000000-0000-4000-8000-000000000000"
).SerializeToString()
AUTH = [(b"authorization", f"Bearer {READER}".encode())]
DEADLINE = [(b"grpc-timeout", b"2S")]

OK = grpc.StatusCode.OK.value[0]
INVALID = grpc.StatusCode.INVALID_ARGUMENT.value[0]
UNAUTH = grpc.StatusCode.UNAUTHENTICATED.value[0]
EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
DEADLINE_EXCEEDED = grpc.StatusCode.DEADLINE_EXCEEDED.value[0]
UNIMPLEMENTED = grpc.StatusCode.UNIMPLEMENTED.value[0]
INTERNAL = grpc.StatusCode.INTERNAL.value[0]

# name: (body, extra headers, expected grpc-status, text the message must contain)
SERVICE_ANSWERS = {
    # Reach the service: parsed leniently, answered after the caller check.
    "garbage protobuf": (frame(b"\xff\xff\xff\xff\xff\x01\x02"), AUTH, INVALID, "not a valid"),
    "invalid UTF-8 in a string": (frame(b"\x0a\x03\xff\xfe\xfd"), AUTH, INVALID, "not a valid"),
    "surrogate bytes (CESU-8)": (frame(b"\x0a\x03\xed\xa0\x80"), AUTH, INVALID, "not a valid"),
    "NUL in user_id": (frame(b"\x0a\x03a\x00b"), AUTH, INVALID, "UUID"),
    "length prefix shorter than body": (frame(GOOD, length=3), AUTH, INVALID, "not a valid"),
    "empty message": (frame(b""), AUTH, INVALID, "UUID"),
    "garbage without a token": (frame(b"\xff\xff\xff"), [], UNAUTH, "bearer"),
    "non-ASCII authorization": (
        frame(GOOD),
        [(b"authorization", "Bearer \u00e9t\u00e9".encode())],
        UNAUTH,
        "bearer",
    ),
    "Latin-1 authorization": (frame(GOOD), [(b"authorization", b"Bearer \xe9\xe9")], UNAUTH, ""),
    "control characters in authorization": (
        frame(GOOD),
        [(b"authorization", b"Bearer \x01\x7f")],
        UNAUTH,
        "bearer",
    ),
    "binary authorization header": (frame(GOOD), [(b"authorization-bin", b"AAAA")], UNAUTH, ""),
    "two authorization headers": (
        frame(GOOD),
        [*AUTH, (b"authorization", b"Bearer other-token-0123456789")],
        UNAUTH,
        "",
    ),
    # Answered by gRPC core before the service runs.
    "length prefix beyond the size limit": (
        frame(b"", length=0xFFFFFFF0),
        AUTH,
        EXHAUSTED,
        "larger than max",
    ),
    "truncated message (with a deadline)": (
        frame(GOOD, length=len(GOOD) + 50),
        [*AUTH, *DEADLINE],
        DEADLINE_EXCEEDED,
        "",
    ),
    "no message at all (with a deadline)": (b"", [*AUTH, *DEADLINE], DEADLINE_EXCEEDED, ""),
    "compressed flag without grpc-encoding": (
        frame(GOOD, flag=1),
        AUTH,
        INTERNAL,
        "Compression bit set",
    ),
    "gzip flag with bytes that are not gzip": (
        frame(b"not gzip", flag=1),
        [*AUTH, (b"grpc-encoding", b"gzip")],
        INTERNAL,
        "Decompression failed",
    ),
    "malformed grpc-timeout": (
        frame(GOOD),
        [*AUTH, (b"grpc-timeout", b"zzz")],
        INTERNAL,
        "grpc-timeout",
    ),
    "20 KB of metadata": (frame(GOOD), [*AUTH, (b"x-filler", b"a" * 20_000)], OK, ""),
}


async def healthy(server: AuthServer) -> None:
    async with grpc.aio.insecure_channel(server.address) as ch:
        reply = await health_pb2_grpc.HealthStub(ch).Check(
            health_pb2.HealthCheckRequest(), timeout=10
        )
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    answer = await send(server.port, frame(GOOD), AUTH)
    assert answer.grpc_status == OK, answer


@pytest.mark.parametrize("name", list(SERVICE_ANSWERS))
async def test_malformed_request_gets_a_precise_status(
    secure_server: AuthServer, name: str
) -> None:
    body, headers, expected, text = SERVICE_ANSWERS[name]
    answer = await send(secure_server.port, body, headers)
    assert not answer.timed_out, answer
    assert answer.grpc_status == expected, answer
    assert text in answer.grpc_message, answer
    # Never an internal type name or the raw input in the answer.
    assert "DecodeError" not in answer.grpc_message
    assert "\ufffd" not in answer.grpc_message
    await healthy(secure_server)


async def test_unknown_method_is_unimplemented(secure_server: AuthServer) -> None:
    answer = await send(secure_server.port, frame(GOOD), AUTH, path="/auth.v1.AuthService/Drop")
    assert answer.grpc_status == UNIMPLEMENTED
    await healthy(secure_server)


@pytest.mark.parametrize(
    "data",
    [
        b"GET / HTTP/1.1\r\nHost: auth\r\n\r\n",
        b"\x00" * 1024,
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\xff" * 64,  # preface, then a broken frame
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 64,  # TLS hello, plaintext port
    ],
    ids=["http1", "zeros", "broken-frame", "tls-hello"],
)
async def test_garbage_on_the_socket_closes_only_that_connection(
    secure_server: AuthServer, data: bytes
) -> None:
    reply = await send_raw_bytes(secure_server.port, data)
    assert b"auth.v1" not in reply
    await healthy(secure_server)


async def test_many_half_sent_requests_do_not_stop_the_server(secure_server: AuthServer) -> None:
    """Requests that never finish their message and carry a short deadline end by
    DEADLINE_EXCEEDED; meanwhile everyone else is served."""
    import asyncio  # noqa: PLC0415

    stuck = [
        asyncio.ensure_future(
            send(secure_server.port, frame(GOOD, length=1000), [*AUTH, *DEADLINE], timeout=30)
        )
        for _ in range(30)
    ]
    await healthy(secure_server)
    answers = await asyncio.gather(*stuck)
    assert {a.grpc_status for a in answers} == {DEADLINE_EXCEEDED}
    await healthy(secure_server)
