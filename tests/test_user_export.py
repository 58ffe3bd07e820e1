"""ExportUserStates (#30 item 2) and the events' positions (#30 item 1): every user's
state in pages, read in one snapshot that is consistent at an event position;
positions follow commit order without holes, and a creation writes its
user_created event in its own transaction (when user_created events are on)."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

import asyncpg
import grpc
import pytest

from auth_client.contract import (
    USER_CREATED_TYPE,
    USER_DELETED_TYPE,
    admin_pb2,
    decode_user_created,
    decode_user_deleted,
    read_export_page,
    replication_pb2,
    replication_pb2_grpc,
)
from auth_service.api.server import AuthServer
from tests.conftest import make_settings
from tests.events.support import admin_stub, outbox_rows
from tests.helpers import ADMIN_MD, create_user, delete_user, expect_status

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from auth_service.store.pool import Conn
    from auth_service.store.users import User


@pytest.fixture
async def created_on(database_url: str) -> AsyncIterator[AuthServer]:
    """A server with user_created events on (no relay: the rows stay in the outbox)."""
    async with AuthServer(make_settings(database_url), user_created_topic="user_created") as s:
        yield s


async def _export(address: str, page_size: int = 0) -> tuple[int, list[tuple[str, bool]], int]:
    """(position, [(id, deleted)] in order, pages) of one export."""
    async with grpc.aio.insecure_channel(address) as channel:
        stub = replication_pb2_grpc.UserReplicationServiceStub(channel)
        positions: set[int] = set()
        users: list[tuple[str, bool]] = []
        pages = 0
        request = replication_pb2.ExportUserStatesRequest(page_size=page_size)
        async for page in stub.ExportUserStates(request, metadata=ADMIN_MD, timeout=30):
            pages += 1
            positions.add(page.position)
            ids, deleted = read_export_page(page)
            users += [
                (str(uuid.UUID(bytes=ids[i * 16 : i * 16 + 16])), bool(flag))
                for i, flag in enumerate(deleted)
            ]
    [position] = positions
    return position, users, pages


async def _last_position(database_url: str) -> int:
    conn = await asyncpg.connect(database_url)
    try:
        position: int = await conn.fetchval("SELECT last_position FROM event_position")
        return position
    finally:
        await conn.close()


async def test_creations_and_deletions_take_positions_in_commit_order_without_holes(
    created_on: AuthServer, database_url: str
) -> None:
    async with admin_stub(created_on.address) as admin:
        created = [(await create_user(admin)).id for _ in range(6)]
        await expect_status(
            admin.CreateUser(admin_pb2.CreateUserRequest(username="a b"), metadata=ADMIN_MD),
            grpc.StatusCode.INVALID_ARGUMENT,
        )
        for user_id in created[:2]:
            await delete_user(admin, user_id)
        await delete_user(admin, created[0])  # again: no event, no position
    rows = await outbox_rows(database_url)
    kinds = [row["event_type"] for row in rows]
    assert kinds == [USER_CREATED_TYPE] * 6 + [USER_DELETED_TYPE] * 2
    events = [
        decode_user_created(bytes(r["payload"]))
        if r["event_type"] == USER_CREATED_TYPE
        else decode_user_deleted(bytes(r["payload"]))
        for r in rows
    ]
    assert [e.position for e in events] == list(range(1, 9))
    assert [e.user_id for e in events] == created + created[:2]
    assert [r["partition_key"] for r in rows] == created + created[:2]
    assert await _last_position(database_url) == 8


async def test_a_creation_that_fails_writes_neither_the_user_nor_its_event(
    database_url: str,
) -> None:
    async def fail(conn: Conn, user: User) -> None:
        raise RuntimeError("the outbox write failed")

    settings = make_settings(database_url)
    async with AuthServer(settings, on_created=fail) as server, admin_stub(server.address) as admin:
        await expect_status(create_user(admin), grpc.StatusCode.INTERNAL)
    conn = await asyncpg.connect(database_url)
    try:
        assert await conn.fetchval("SELECT count(*) FROM users") == 0
    finally:
        await conn.close()
    assert await outbox_rows(database_url) == []
    assert await _last_position(database_url) == 0


async def test_without_user_created_events_a_creation_writes_no_event_and_none_a_position(
    server: AuthServer, database_url: str
) -> None:
    async with admin_stub(server.address) as admin:
        user_id = (await create_user(admin)).id
        await delete_user(admin, user_id)
    [row] = await outbox_rows(database_url)
    assert row["event_type"] == USER_DELETED_TYPE
    assert decode_user_deleted(bytes(row["payload"])).position == 0
    assert await _last_position(database_url) == 0


async def test_the_export_holds_every_user_in_id_order_at_the_last_position(
    created_on: AuthServer, database_url: str
) -> None:
    async with admin_stub(created_on.address) as admin:
        ids = [(await create_user(admin)).id for _ in range(20)]
        for user_id in ids[:5]:
            await delete_user(admin, user_id)
    position, users, pages = await _export(created_on.address, page_size=7)
    assert position == 25 == await _last_position(database_url)
    assert pages == 3
    assert [u for u, _ in users] == sorted(ids)  # uuid order is the bytes' order
    assert {u for u, deleted in users if deleted} == set(ids[:5])
    empty_position, nobody, empty_pages = await _export(created_on.address)
    assert (empty_position, empty_pages) == (25, 1)
    assert len(nobody) == 20


async def test_an_export_is_one_snapshot_whatever_commits_while_it_is_read(
    created_on: AuthServer, database_url: str
) -> None:
    async with admin_stub(created_on.address) as admin:
        before = [(await create_user(admin)).id for _ in range(6)]
        async with grpc.aio.insecure_channel(created_on.address) as channel:
            stub = replication_pb2_grpc.UserReplicationServiceStub(channel)
            call = stub.ExportUserStates(
                replication_pb2.ExportUserStatesRequest(page_size=1), metadata=ADMIN_MD
            )
            pages = [await call.read()]  # the snapshot is taken
            later = [(await create_user(admin)).id for _ in range(3)]
            await delete_user(admin, before[0])
            while (page := await call.read()) is not grpc.aio.EOF:
                pages.append(page)
    assert {page.position for page in pages} == {6}
    exported = {str(uuid.UUID(bytes=p.user_ids)): bytes(p.states) for p in pages}
    assert set(exported) == set(before)  # none of `later`
    assert exported[before[0]] == b"\x01"  # still ACTIVE in the snapshot
    assert not set(later) & set(exported)
    assert await _last_position(database_url) == 10


async def test_export_requests_are_checked(created_on: AuthServer) -> None:
    async with grpc.aio.insecure_channel(created_on.address) as channel:
        stub = replication_pb2_grpc.UserReplicationServiceStub(channel)
        too_big = replication_pb2.ExportUserStatesRequest(page_size=100_001)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            async for _ in stub.ExportUserStates(too_big, metadata=ADMIN_MD):
                pass
        assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(grpc.aio.AioRpcError) as info:
            async for _ in stub.ExportUserStates(
                replication_pb2.ExportUserStatesRequest(),
                metadata=(("authorization", "Bearer not-a-known-token-at-all"),),
            ):
                pass
        assert info.value.code() is grpc.StatusCode.UNAUTHENTICATED
