"""Small helpers shared by the server tests."""

from __future__ import annotations

import uuid

import grpc
import pytest

from auth_client.contract import admin_pb2, admin_pb2_grpc, auth_pb2

ADMIN_TOKEN = "test-admin-token-0123456789"
ADMIN_MD = (("authorization", f"Bearer {ADMIN_TOKEN}"),)


async def create_user(
    admin: admin_pb2_grpc.UserAdminServiceStub, username: str | None = None, **fields: str
) -> auth_pb2.User:
    name = username or f"user_{uuid.uuid4().hex[:10]}"
    reply = await admin.CreateUser(
        admin_pb2.CreateUserRequest(username=name, **fields), metadata=ADMIN_MD, timeout=10
    )
    return reply.user


async def delete_user(
    admin: admin_pb2_grpc.UserAdminServiceStub, user_id: str
) -> admin_pb2.DeleteUserResponse:
    return await admin.DeleteUser(
        admin_pb2.DeleteUserRequest(user_id=user_id), metadata=ADMIN_MD, timeout=10
    )


async def expect_status(call: object, code: grpc.StatusCode) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call  # type: ignore[misc]
    assert info.value.code() == code, info.value.details()
    return info.value
