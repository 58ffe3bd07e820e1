"""No false NOT_FOUND between auth-service replicas (#27 item 2).

Two servers on one PostgreSQL, each with its state cache and index of every user
(the defaults). A caller creates a user through A and at once asks B, as a
messaging service inserts the first row for a user who just signed up. B has not
heard of the user yet (the change notification is a millisecond away): before #27
its index answered NOT_FOUND for about 1 in 300 such users. NOT_FOUND is the
harmful direction (a valid insert refused, or "does not exist" cached by the
client), so B must only say it after the primary confirmed it."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from typing import TYPE_CHECKING

import grpc

from auth_client.contract import admin_pb2_grpc, auth_pb2, auth_pb2_grpc
from auth_service.api.server import AuthServer
from tests.conftest import eventually, make_settings
from tests.helpers import create_user

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from auth_service.store.state_cache import StateCache

TRIES = 300
_SERVERS: list[AuthServer] = []  # the two of the running `two_servers`


@contextlib.asynccontextmanager
async def two_servers(database_url: str) -> AsyncIterator[tuple[str, str]]:
    settings = make_settings(database_url, state_index_max_users=1_000_000)
    async with AuthServer(settings) as a, AuthServer(settings) as b:
        _SERVERS[:] = [a, b]
        for server in (a, b):  # both serve from memory: the index is loaded
            cache = server.lookup.cache

            async def loaded(cache: StateCache = cache) -> bool:
                return cache.answers_everything()

            await eventually(loaded, timeout=30)
        yield a.address, b.address


async def _unknown_to_b(database_url: str, ask: str) -> list[str]:
    """Create TRIES users through A, asking B about each at once (`ask`: which
    call); the ids B called NOT_FOUND."""
    false: list[str] = []
    async with (
        two_servers(database_url) as (a, b),
        grpc.aio.insecure_channel(a) as to_a,
        grpc.aio.insecure_channel(b) as to_b,
    ):
        admin = admin_pb2_grpc.UserAdminServiceStub(to_a)
        read = auth_pb2_grpc.AuthServiceStub(to_b)
        for _ in range(TRIES):
            user = await create_user(admin)
            if ask == "UserExists":
                reply = await read.UserExists(auth_pb2.UserExistsRequest(user_id=user.id))
                found = reply.exists
            elif ask == "BatchUserExists":
                batch = await read.BatchUserExists(
                    auth_pb2.BatchUserExistsRequest(user_ids=[user.id])
                )
                found = batch.results[0].exists
            else:
                try:
                    await read.GetUser(auth_pb2.GetUserRequest(user_id=user.id))
                    found = True
                except grpc.aio.AioRpcError as exc:
                    assert exc.code() == grpc.StatusCode.NOT_FOUND, exc
                    found = False
            if not found:
                false.append(user.id)
    return false


async def test_a_user_created_through_one_server_is_never_not_found_at_another(
    database_url: str,
) -> None:
    assert await _unknown_to_b(database_url, "UserExists") == []


async def test_batch_user_exists_never_calls_a_just_created_user_not_found(
    database_url: str,
) -> None:
    assert await _unknown_to_b(database_url, "BatchUserExists") == []


async def test_get_user_finds_a_user_just_created_through_another_server(
    database_url: str,
) -> None:
    assert await _unknown_to_b(database_url, "GetUser") == []


async def test_every_id_memory_calls_not_found_is_counted_as_a_confirmation(
    database_url: str,
) -> None:
    """auth_lookup_confirmations_total: what the NOT_FOUND rule costs the primary,
    for UserExists as for BatchUserExists (a flood of unknown ids shows there)."""
    async with (
        two_servers(database_url) as (_, b),
        grpc.aio.insecure_channel(b) as to_b,
    ):
        read = auth_pb2_grpc.AuthServiceStub(to_b)
        server = next(s for s in _SERVERS if s.address == b)
        before = server.lookup.confirmations
        unknown = [str(uuid.uuid4()) for _ in range(3)]
        for user_id in unknown:
            reply = await read.UserExists(auth_pb2.UserExistsRequest(user_id=user_id))
            assert reply.state == auth_pb2.USER_STATE_NOT_FOUND
        await read.BatchUserExists(auth_pb2.BatchUserExistsRequest(user_ids=unknown))
        assert server.lookup.confirmations == before + 2 * len(unknown)


async def test_never_not_found_while_the_other_server_is_under_load(database_url: str) -> None:
    """The same, while B answers a stream of lookups of existing users meanwhile."""
    async with (
        two_servers(database_url) as (a, b),
        grpc.aio.insecure_channel(a) as to_a,
        grpc.aio.insecure_channel(b) as to_b,
    ):
        admin = admin_pb2_grpc.UserAdminServiceStub(to_a)
        read = auth_pb2_grpc.AuthServiceStub(to_b)
        known = [(await create_user(admin)).id for _ in range(20)]
        stop = asyncio.Event()

        async def load() -> None:
            while not stop.is_set():
                await asyncio.gather(
                    *(read.UserExists(auth_pb2.UserExistsRequest(user_id=i)) for i in known)
                )

        loaders = [asyncio.create_task(load()) for _ in range(4)]
        false = []
        try:
            for _ in range(TRIES):
                user = await create_user(admin)
                reply = await read.UserExists(auth_pb2.UserExistsRequest(user_id=user.id))
                if not reply.exists:
                    false.append(user.id)
        finally:
            stop.set()
            await asyncio.gather(*loaders)
    assert false == []
