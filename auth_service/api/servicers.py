"""AuthService, UserAdminService and UserReplicationService: proto <-> domain,
nothing else.

Requests are validated (`validation`), the work is done by the store layer
(`store.users`, `store.lookup`, `store.deletion`, `store.user_export`), answers are
built from its domain values. Errors are raised as domain errors (`auth_service.errors`); the call path
(`rpc.CallPath`) maps them to gRPC statuses in one place.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

from auth_client.contract import (
    UserState,
    admin_pb2,
    admin_pb2_grpc,
    auth_pb2,
    auth_pb2_grpc,
    export_page,
    replication_pb2,
    replication_pb2_grpc,
    timestamp,
    wire_state,
    wire_states,
)
from auth_service.api import validation
from auth_service.api.rpc import Call, handler
from auth_service.config.tokens import SCOPE_ADMIN, SCOPE_READ
from auth_service.errors import NotFoundError
from auth_service.store.deletion import OnDeleted, delete_user
from auth_service.store.lookup import StateLookup
from auth_service.store.outbox import write_user_deleted
from auth_service.store.users import OnCreated, User, UserRepository

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator

    from auth_service.store.user_export import UserExport


def user_to_proto(user: User) -> auth_pb2.User:
    """Public profile only: the email never leaves the service."""
    return auth_pb2.User(
        id=str(user.id),
        username=user.username,
        display_name=user.display_name,
        created_at=timestamp(user.created_at),
        updated_at=timestamp(user.updated_at),
    )


class AuthServicer(auth_pb2_grpc.AuthServiceServicer):
    def __init__(
        self,
        users: UserRepository,
        lookup: StateLookup,
    ) -> None:
        self.users = users
        # The state cache, then queries shared by concurrent calls (store/lookup.py).
        self.lookup = lookup
        self._cached = lookup.cached
        self._state = lookup.state

    @handler(SCOPE_READ, read=True)
    async def UserExists(
        self, request: auth_pb2.UserExistsRequest, call: Call
    ) -> auth_pb2.UserExistsResponse:
        key = validation.canonical_user_id(request.user_id)
        state = self._cached(key)
        if state is None:  # a query: only now is the time budget needed
            state = await self._state(key, call.budget())
        return auth_pb2.UserExistsResponse(
            exists=state is UserState.ACTIVE,
            state=wire_state(state),
        )

    @handler(SCOPE_READ, read=True)
    async def GetUser(
        self, request: auth_pb2.GetUserRequest, call: Call
    ) -> auth_pb2.GetUserResponse:
        user_id = validation.parse_user_id(request.user_id)
        user = await self.users.get(user_id, call.budget())
        if user is None or user.state is not UserState.ACTIVE:
            raise NotFoundError("user not found")
        return auth_pb2.GetUserResponse(user=user_to_proto(user))

    @handler(SCOPE_READ, read=True)
    async def BatchUserExists(
        self, request: auth_pb2.BatchUserExistsRequest, call: Call
    ) -> auth_pb2.BatchUserExistsResponse:
        texts = list(request.user_ids)  # decode the repeated field once
        keys = validation.canonical_user_ids(texts)
        states = await self.lookup.states(keys, call.budget())
        response = auth_pb2.BatchUserExistsResponse()
        if request.states_only:
            # UserState numbers are the contract's: the list goes in as it is.
            response.states.extend(wire_states(states))
            return response
        add = response.results.add
        for text, state in zip(texts, states, strict=True):
            add(user_id=text, exists=state == UserState.ACTIVE, state=wire_state(state))
        return response


class UserAdminServicer(admin_pb2_grpc.UserAdminServiceServicer):
    def __init__(
        self,
        users: UserRepository,
        on_deleted: OnDeleted = write_user_deleted,
        *,
        on_created: OnCreated | None = None,
        erase_at_once: bool = True,
    ) -> None:
        self.users = users
        self.on_deleted = on_deleted
        # With user_created events on: writes the event in the creating transaction.
        self.on_created = on_created
        # False with a retention period: the erasure job erases later.
        self.erase_at_once = erase_at_once

    @handler(SCOPE_ADMIN, read=False)
    async def CreateUser(
        self, request: admin_pb2.CreateUserRequest, call: Call
    ) -> admin_pb2.CreateUserResponse:
        username = validation.check_username(request.username)
        display_name = validation.check_display_name(request.display_name, username)
        email = validation.check_email(request.email if request.HasField("email") else None)
        user = await self.users.create(
            username, display_name, email, call.budget(), self.on_created
        )
        return admin_pb2.CreateUserResponse(user=user_to_proto(user))

    @handler(SCOPE_ADMIN, read=False)
    async def DeleteUser(
        self, request: admin_pb2.DeleteUserRequest, call: Call
    ) -> admin_pb2.DeleteUserResponse:
        user_id = validation.parse_user_id(request.user_id)
        deletion = await delete_user(
            self.users, user_id, call.budget(), self.on_deleted, erase=self.erase_at_once
        )
        if deletion is None:
            raise NotFoundError("user not found")
        deleted_at = deletion.user.deleted_at
        assert deleted_at is not None
        return admin_pb2.DeleteUserResponse(
            user_id=str(user_id),
            deleted_at=timestamp(deleted_at),
            already_deleted=not deletion.newly_deleted,
        )


class UserReplicationServicer(replication_pb2_grpc.UserReplicationServiceServicer):
    def __init__(self, export: UserExport) -> None:
        self.export = export

    @handler(SCOPE_READ, read=True)
    async def ExportUserStates(
        self, request: replication_pb2.ExportUserStatesRequest, call: Call
    ) -> AsyncGenerator[replication_pb2.ExportUserStatesResponse, None]:
        page_size = validation.export_page_size(request.page_size)
        async with contextlib.aclosing(self.export.pages(page_size, call.budget)) as pages:
            async for page in pages:
                yield export_page(page.position, page.ids, page.states)
