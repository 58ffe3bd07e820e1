"""`auth-service users create|get|delete`: the admin API from a shell. Prints JSON
(field names as in the .proto, snake_case); a failure is one `error: CODE: details`
line on stderr, and for the codes a first try runs into (no or unknown token, a
token without the scope, no server at the target) a `hint:` line saying what to do."""

from __future__ import annotations

import json
import sys
from typing import Any

import grpc
from google.protobuf.json_format import MessageToDict

from auth_client import TLSConfig, create_channel
from auth_client.contract import (
    admin_pb2,
    admin_pb2_grpc,
    auth_pb2,
    auth_pb2_grpc,
    bearer_metadata,
)


def _user_dict(user: auth_pb2.User) -> dict[str, Any]:
    return MessageToDict(user, preserving_proto_field_name=True)


async def _get(
    channel: grpc.aio.Channel, user_id: str, md: tuple[tuple[str, str], ...], timeout: float
) -> int:
    """Print an active user; for a deleted one, its tombstone: the id and its state,
    all that the service still answers about it (its personal data is erased)."""
    reads = auth_pb2_grpc.AuthServiceStub(channel)
    try:
        got = await reads.GetUser(
            auth_pb2.GetUserRequest(user_id=user_id), metadata=md, timeout=timeout
        )
    except grpc.aio.AioRpcError as exc:
        if exc.code() is not grpc.StatusCode.NOT_FOUND:
            raise
        state = await reads.UserExists(
            auth_pb2.UserExistsRequest(user_id=user_id), metadata=md, timeout=timeout
        )
        if state.state == auth_pb2.USER_STATE_DELETED:
            print(json.dumps({"id": user_id, "state": "DELETED"}, indent=2))  # noqa: T201
            print(  # noqa: T201
                f"error: NOT_FOUND: user {user_id} is deleted; its personal data is erased",
                file=sys.stderr,
            )
            return 1
        raise
    print(json.dumps(_user_dict(got.user), indent=2))  # noqa: T201
    return 0


def error_hint(
    code: grpc.StatusCode, details: str, *, token: str | None, target: str
) -> str | None:
    """What to do about a failed call (its status `code` and `details`), or None when
    the details say enough."""
    if code is grpc.StatusCode.UNAUTHENTICATED and not token:
        return (
            "no token was sent: pass --token TOKEN or set AUTH_SERVICE_TOKEN to an admin"
            " token (one of the server's ADMIN_TOKENS; `auth-service dev` prints its own)"
        )
    if code is grpc.StatusCode.UNAUTHENTICATED:
        return (
            "the server does not know the token from --token / AUTH_SERVICE_TOKEN: use one of"
            " its ADMIN_TOKENS (`auth-service dev` prints its own; a new dev run makes a new one)"
        )
    if code is grpc.StatusCode.PERMISSION_DENIED:
        return (
            "the token's caller lacks the scope: create and delete need users:admin"
            " (ADMIN_TOKENS, or AUTH_TOKENS with users:admin), get needs users:read"
        )
    if code is grpc.StatusCode.UNAVAILABLE and "connect" in details.lower():
        return (
            f"is auth-service running at {target}? (--target HOST:PORT or"
            " AUTH_SERVICE_TARGET; a TLS server needs --ca-file)"
        )
    return None


async def run_users(
    action: str,
    *,
    target: str,
    token: str | None,
    timeout: float,
    tls: TLSConfig | None = None,
    username: str | None = None,
    display_name: str | None = None,
    email: str | None = None,
    user_id: str | None = None,
) -> int:
    channel = create_channel(target, tls=tls)
    async with channel:
        md = bearer_metadata(token)
        try:
            if action == "create":
                assert username is not None
                request = admin_pb2.CreateUserRequest(
                    username=username, display_name=display_name or ""
                )
                if email:
                    request.email = email
                created = await admin_pb2_grpc.UserAdminServiceStub(channel).CreateUser(
                    request, metadata=md, timeout=timeout
                )
                out: dict[str, Any] = _user_dict(created.user)
            elif action == "get":
                return await _get(channel, user_id or "", md, timeout)
            else:
                deleted = await admin_pb2_grpc.UserAdminServiceStub(channel).DeleteUser(
                    admin_pb2.DeleteUserRequest(user_id=user_id or ""), metadata=md, timeout=timeout
                )
                out = MessageToDict(
                    deleted,
                    preserving_proto_field_name=True,
                    always_print_fields_with_no_presence=True,
                )
        except grpc.aio.AioRpcError as exc:
            print(f"error: {exc.code().name}: {exc.details()}", file=sys.stderr)  # noqa: T201
            if hint := error_hint(exc.code(), exc.details() or "", token=token, target=target):
                print(f"hint: {hint}", file=sys.stderr)  # noqa: T201
            return 1
    print(json.dumps(out, indent=2))  # noqa: T201
    return 0
