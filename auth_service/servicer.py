"""AuthService and UserAdminService: proto <-> domain.

Errors are raised as domain errors (`auth_service.errors`); `rpc.handler` maps them
to gRPC statuses in one place.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime

from google.protobuf.timestamp_pb2 import Timestamp

from auth_client._proto.auth.v1 import admin_pb2, admin_pb2_grpc, auth_pb2, auth_pb2_grpc
from auth_service import ids
from auth_service.auth import SCOPE_ADMIN, SCOPE_READ
from auth_service.db import Budget, Conn, translate_errors
from auth_service.errors import NotFoundError
from auth_service.lookup import StateLookup
from auth_service.rpc import Access, Call, handler
from auth_service.users import Deletion, User, UserRepository, UserState

# Called inside the DeleteUser transaction for a user that was just deleted; the
# events module writes the `user_deleted` outbox row here.
OnDeleted = Callable[[Conn, Deletion], Awaitable[None]]

_STATE = {
    UserState.ACTIVE: auth_pb2.USER_STATE_ACTIVE,
    UserState.DELETED: auth_pb2.USER_STATE_DELETED,
    UserState.NOT_FOUND: auth_pb2.USER_STATE_NOT_FOUND,
}


def _timestamp(value: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(value)
    return ts


def user_to_proto(user: User) -> auth_pb2.User:
    """Public profile only: the email never leaves the service."""
    return auth_pb2.User(
        id=str(user.id),
        username=user.username,
        display_name=user.display_name,
        created_at=_timestamp(user.created_at),
        updated_at=_timestamp(user.updated_at),
    )


class AuthServicer(auth_pb2_grpc.AuthServiceServicer):
    def __init__(
        self,
        users: UserRepository,
        access: Access,
        default_budget_s: float,
        lookup: StateLookup | None = None,
    ) -> None:
        self.users = users
        self.access = access
        self.default_budget_s = default_budget_s
        # Concurrent UserExists calls share queries (see lookup.py); None = one each.
        self._state = lookup.state if lookup is not None else users.state

    @handler(SCOPE_READ, read=True)
    async def UserExists(
        self, request: auth_pb2.UserExistsRequest, call: Call
    ) -> auth_pb2.UserExistsResponse:
        user_id = ids.parse_user_id(request.user_id)
        state = await self._state(user_id, call.budget())
        return auth_pb2.UserExistsResponse(exists=state is UserState.ACTIVE, state=_STATE[state])

    @handler(SCOPE_READ, read=True)
    async def GetUser(
        self, request: auth_pb2.GetUserRequest, call: Call
    ) -> auth_pb2.GetUserResponse:
        user_id = ids.parse_user_id(request.user_id)
        user = await self.users.get(user_id, call.budget())
        if user is None or user.deleted_at is not None:
            raise NotFoundError("user not found")
        return auth_pb2.GetUserResponse(user=user_to_proto(user))

    @handler(SCOPE_READ, read=True)
    async def BatchUserExists(
        self, request: auth_pb2.BatchUserExistsRequest, call: Call
    ) -> auth_pb2.BatchUserExistsResponse:
        texts = list(request.user_ids)  # decode the repeated field once
        keys = ids.canonical_user_ids(texts)
        active = await self.users.active_flags(keys, call.budget())
        response = auth_pb2.BatchUserExistsResponse()
        add = response.results.add
        for text, key in zip(texts, keys, strict=True):
            flag = active.get(key)  # True active, False deleted, None never created
            if flag:
                add(user_id=text, exists=True, state=auth_pb2.USER_STATE_ACTIVE)
            elif flag is None:
                add(user_id=text, exists=False, state=auth_pb2.USER_STATE_NOT_FOUND)
            else:
                add(user_id=text, exists=False, state=auth_pb2.USER_STATE_DELETED)
        return response


class UserAdminServicer(admin_pb2_grpc.UserAdminServiceServicer):
    def __init__(
        self,
        users: UserRepository,
        access: Access,
        default_budget_s: float,
        on_deleted: OnDeleted | None = None,
    ) -> None:
        self.users = users
        self.access = access
        self.default_budget_s = default_budget_s
        self.on_deleted = on_deleted

    @handler(SCOPE_ADMIN, read=False)
    async def CreateUser(
        self, request: admin_pb2.CreateUserRequest, call: Call
    ) -> admin_pb2.CreateUserResponse:
        username = ids.check_username(request.username)
        display_name = ids.check_display_name(request.display_name, username)
        email = ids.check_email(request.email if request.HasField("email") else None)
        user = await self.users.create(username, display_name, email, call.budget())
        return admin_pb2.CreateUserResponse(user=user_to_proto(user))

    @handler(SCOPE_ADMIN, read=False)
    async def DeleteUser(
        self, request: admin_pb2.DeleteUserRequest, call: Call
    ) -> admin_pb2.DeleteUserResponse:
        user_id = ids.parse_user_id(request.user_id)
        deletion = await self._delete(user_id, call.budget())
        if deletion is None:
            raise NotFoundError("user not found")
        deleted_at = deletion.user.deleted_at
        assert deleted_at is not None
        return admin_pb2.DeleteUserResponse(
            user_id=str(user_id),
            deleted_at=_timestamp(deleted_at),
            already_deleted=not deletion.newly_deleted,
        )

    async def _delete(self, user_id: uuid.UUID, budget: Budget) -> Deletion | None:
        """Soft delete and its event in one transaction: both commit or neither."""
        pool = self.users.pool
        async with (
            translate_errors(budget),
            pool.acquire(timeout=budget.seconds) as conn,
            conn.transaction(),
        ):
            deletion = await UserRepository.soft_delete(conn, user_id, budget)
            if deletion is not None and deletion.newly_deleted and self.on_deleted:
                await self.on_deleted(conn, deletion)
        return deletion
