"""UserAdminService: create, delete, conflicts, idempotence and the admin token."""

from __future__ import annotations

import grpc
import pytest

from auth_client.contract import admin_pb2, admin_pb2_grpc, auth_pb2
from auth_service.api.server import AuthServer
from tests.conftest import make_settings
from tests.helpers import ADMIN_MD, create_user, delete_user, expect_status

NEVER = "00000000-0000-4000-8000-000000000000"


async def test_create_returns_user_with_id_and_defaults_display_name(admin_stub) -> None:
    user = await create_user(admin_stub, "frank")
    assert len(user.id) == 36
    assert (user.username, user.display_name) == ("frank", "frank")
    assert user.created_at == user.updated_at


async def test_username_conflict_is_case_insensitive(admin_stub) -> None:
    await create_user(admin_stub, "Grace")
    for name in ("grace", "GRACE", "Grace"):
        await expect_status(
            admin_stub.CreateUser(
                admin_pb2.CreateUserRequest(username=name), metadata=ADMIN_MD, timeout=5
            ),
            grpc.StatusCode.ALREADY_EXISTS,
        )


async def test_username_of_deleted_user_can_be_taken_again(admin_stub, auth_stub) -> None:
    old = await create_user(admin_stub, "heidi")
    await delete_user(admin_stub, old.id)
    new = await create_user(admin_stub, "HEIDI")
    assert new.id != old.id
    reply = await auth_stub.UserExists(auth_pb2.UserExistsRequest(user_id=old.id), timeout=5)
    assert reply.state == auth_pb2.USER_STATE_DELETED


@pytest.mark.parametrize(
    ("fields", "word"),
    [
        ({"username": ""}, "username"),
        ({"username": "has space"}, "username"),
        ({"username": "x" * 65}, "username"),
        ({"username": "ivan", "display_name": "d" * 129}, "display_name"),
        ({"username": "ivan", "email": "not-an-email"}, "email"),
    ],
)
async def test_invalid_create_requests(admin_stub, fields, word) -> None:
    err = await expect_status(
        admin_stub.CreateUser(admin_pb2.CreateUserRequest(**fields), metadata=ADMIN_MD, timeout=5),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert word in (err.details() or "")


async def test_delete_is_idempotent_and_keeps_original_time(admin_stub) -> None:
    user = await create_user(admin_stub)
    first = await delete_user(admin_stub, user.id)
    second = await delete_user(admin_stub, user.id)
    assert first.already_deleted is False
    assert second.already_deleted is True
    assert second.deleted_at == first.deleted_at
    assert first.user_id == user.id


async def test_delete_of_never_created_user_is_not_found(admin_stub) -> None:
    await expect_status(
        admin_stub.DeleteUser(
            admin_pb2.DeleteUserRequest(user_id=NEVER), metadata=ADMIN_MD, timeout=5
        ),
        grpc.StatusCode.NOT_FOUND,
    )


async def test_delete_with_malformed_id_is_invalid_argument(admin_stub) -> None:
    await expect_status(
        admin_stub.DeleteUser(
            admin_pb2.DeleteUserRequest(user_id="nope"), metadata=ADMIN_MD, timeout=5
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )


@pytest.mark.parametrize(
    "metadata",
    [
        (),
        (("authorization", "Bearer wrong-token-0123456789"),),
        (("authorization", "Basic dGVzdA=="),),
        (("authorization", "Bearer "),),
    ],
    ids=["missing", "wrong", "wrong-scheme", "empty"],
)
async def test_admin_calls_without_valid_token_are_unauthenticated(
    admin_stub, auth_stub, metadata
) -> None:
    await expect_status(
        admin_stub.CreateUser(
            admin_pb2.CreateUserRequest(username="mallory"), metadata=metadata, timeout=5
        ),
        grpc.StatusCode.UNAUTHENTICATED,
    )
    await expect_status(
        admin_stub.DeleteUser(
            admin_pb2.DeleteUserRequest(user_id=NEVER), metadata=metadata, timeout=5
        ),
        grpc.StatusCode.UNAUTHENTICATED,
    )


async def test_without_configured_admin_tokens_every_admin_call_is_rejected(database_url) -> None:
    settings = make_settings(database_url, admin_tokens=())
    async with AuthServer(settings) as srv, grpc.aio.insecure_channel(srv.address) as ch:
        admin = admin_pb2_grpc.UserAdminServiceStub(ch)
        for md in ((), ADMIN_MD):
            await expect_status(
                admin.CreateUser(
                    admin_pb2.CreateUserRequest(username="nobody"), metadata=md, timeout=5
                ),
                grpc.StatusCode.UNAUTHENTICATED,
            )
