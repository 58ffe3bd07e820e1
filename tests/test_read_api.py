"""AuthService against a real server and database: every answer a caller relies on."""

from __future__ import annotations

import uuid

import grpc

from auth_client.contract import UserState, auth_pb2
from auth_service.store.pool import Budget
from auth_service.store.users import UserRepository, state_of
from tests.helpers import create_user, delete_user, expect_status

NEVER = "00000000-0000-4000-8000-000000000000"


async def test_active_user_exists(auth_stub, admin_stub) -> None:
    user = await create_user(admin_stub)
    reply = await auth_stub.UserExists(auth_pb2.UserExistsRequest(user_id=user.id), timeout=5)
    assert reply.exists is True
    assert reply.state == auth_pb2.USER_STATE_ACTIVE


async def test_never_created_user_is_not_found(auth_stub) -> None:
    reply = await auth_stub.UserExists(auth_pb2.UserExistsRequest(user_id=NEVER), timeout=5)
    assert (reply.exists, reply.state) == (False, auth_pb2.USER_STATE_NOT_FOUND)


async def test_soft_deleted_user_does_not_exist_and_is_told_apart(auth_stub, admin_stub) -> None:
    user = await create_user(admin_stub)
    await delete_user(admin_stub, user.id)
    reply = await auth_stub.UserExists(auth_pb2.UserExistsRequest(user_id=user.id), timeout=5)
    assert (reply.exists, reply.state) == (False, auth_pb2.USER_STATE_DELETED)


async def test_uppercase_id_is_the_same_user(auth_stub, admin_stub) -> None:
    user = await create_user(admin_stub)
    reply = await auth_stub.UserExists(
        auth_pb2.UserExistsRequest(user_id=user.id.upper()), timeout=5
    )
    assert reply.exists is True


async def test_get_user_returns_public_profile_without_email(auth_stub, admin_stub) -> None:
    user = await create_user(admin_stub, display_name="Eve E.", email="eve@example.com")
    reply = await auth_stub.GetUser(auth_pb2.GetUserRequest(user_id=user.id), timeout=5)
    assert reply.user.id == user.id
    assert reply.user.username == user.username
    assert reply.user.display_name == "Eve E."
    assert reply.user.created_at.seconds > 0
    assert b"eve@example.com" not in reply.SerializeToString()


async def test_get_user_not_found_for_deleted_and_never_created(auth_stub, admin_stub) -> None:
    user = await create_user(admin_stub)
    await delete_user(admin_stub, user.id)
    for user_id in (user.id, NEVER):
        await expect_status(
            auth_stub.GetUser(auth_pb2.GetUserRequest(user_id=user_id), timeout=5),
            grpc.StatusCode.NOT_FOUND,
        )


async def test_batch_answers_in_request_order_with_duplicates(auth_stub, admin_stub) -> None:
    alive = await create_user(admin_stub)
    gone = await create_user(admin_stub)
    await delete_user(admin_stub, gone.id)
    asked = [NEVER, alive.id, gone.id, alive.id.upper(), NEVER]
    reply = await auth_stub.BatchUserExists(
        auth_pb2.BatchUserExistsRequest(user_ids=asked), timeout=5
    )
    assert [r.user_id for r in reply.results] == asked
    assert [r.exists for r in reply.results] == [False, True, False, True, False]
    assert [r.state for r in reply.results] == [
        auth_pb2.USER_STATE_NOT_FOUND,
        auth_pb2.USER_STATE_ACTIVE,
        auth_pb2.USER_STATE_DELETED,
        auth_pb2.USER_STATE_ACTIVE,
        auth_pb2.USER_STATE_NOT_FOUND,
    ]


async def test_batch_of_1000_is_accepted_and_1001_rejected(auth_stub) -> None:
    ids = [str(uuid.uuid4()) for _ in range(1001)]
    reply = await auth_stub.BatchUserExists(
        auth_pb2.BatchUserExistsRequest(user_ids=ids[:1000]), timeout=10
    )
    assert len(reply.results) == 1000
    assert not any(r.exists for r in reply.results)
    err = await expect_status(
        auth_stub.BatchUserExists(auth_pb2.BatchUserExistsRequest(user_ids=ids), timeout=10),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert "1000" in (err.details() or "")


async def test_empty_batch_answers_empty(auth_stub) -> None:
    reply = await auth_stub.BatchUserExists(auth_pb2.BatchUserExistsRequest(), timeout=5)
    assert list(reply.results) == []


async def test_malformed_ids_are_invalid_argument_without_echo(auth_stub) -> None:
    hostile = [
        "",
        "not-a-uuid",
        "'; DROP TABLE users; --",
        "{00000000-0000-4000-8000-000000000000}",
        "00000000000040008000000000000000",
        "x" * 10_000,
    ]
    for bad in hostile:
        for call in (
            auth_stub.UserExists(auth_pb2.UserExistsRequest(user_id=bad), timeout=5),
            auth_stub.GetUser(auth_pb2.GetUserRequest(user_id=bad), timeout=5),
            auth_stub.BatchUserExists(
                auth_pb2.BatchUserExistsRequest(user_ids=[NEVER, bad]), timeout=5
            ),
        ):
            err = await expect_status(call, grpc.StatusCode.INVALID_ARGUMENT)
            details = err.details() or ""
            assert "UUID" in details
            if bad:
                assert bad not in details


async def test_the_state_rule_is_the_same_for_ids_and_for_loaded_rows(server, admin_stub) -> None:
    """The state query (ids -> UserState numbers, in SQL) and `state_of` (a loaded
    row -> UserState) are the one rule written twice; they agree, and the numbers
    are the contract's."""
    assert [int(s) for s in UserState] == [
        auth_pb2.USER_STATE_ACTIVE,
        auth_pb2.USER_STATE_DELETED,
        auth_pb2.USER_STATE_NOT_FOUND,
    ]
    alive = await create_user(admin_stub)
    gone = await create_user(admin_stub)
    await delete_user(admin_stub, gone.id)
    never = str(uuid.uuid4())
    repo = UserRepository(server.pool)
    keys = [alive.id, gone.id, never, alive.id]
    numbers = await repo.states(",".join(keys), Budget(5.0))
    for key, number in zip(keys, numbers, strict=True):
        row = await repo.get(uuid.UUID(key), Budget(5.0))
        expected = state_of(None if row is None else row.deleted_at is None)
        assert number == expected
    assert numbers == [UserState.ACTIVE, UserState.DELETED, UserState.NOT_FOUND, UserState.ACTIVE]
