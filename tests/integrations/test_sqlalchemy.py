"""The SQLAlchemy integration against a real auth-service and a real PostgreSQL: a
flush that adds or changes a reference to a user that does not exist (or is deleted)
fails naming the column and id, with one batched lookup per flush; sync Session
with SyncAuthClient (psycopg), AsyncSession with AuthClient (asyncpg)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import ForeignKey, String, create_engine, func, select
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from auth_client import (
    AuthClient,
    CacheConfig,
    FallbackPolicy,
    InvalidRequestError,
    ServiceUnavailableError,
    SyncAuthClient,
    UserNotFoundError,
    UserReferenceError,
)
from auth_client.integrations.sqlalchemy import check_user_references, user_reference
from auth_service.api.server import AuthServer
from auth_service.local.embedded import free_port
from tests.client.conftest import seed_users
from tests.client.test_sync_client import SyncCounter
from tests.integrations.conftest import driver_url


class Base(DeclarativeBase):
    pass


class ChatGroup(Base):
    __tablename__ = "chat_groups"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(50), unique=True)


class GroupMember(Base):
    __tablename__ = "group_members"
    group_id: Mapped[int] = mapped_column(ForeignKey("chat_groups.id"), primary_key=True)
    user_id: Mapped[uuid.UUID] = mapped_column(primary_key=True, info=user_reference())


class Message(Base):
    __tablename__ = "group_messages"
    id: Mapped[int] = mapped_column(primary_key=True)
    sender_id: Mapped[uuid.UUID] = mapped_column(info=user_reference(note="kept"))
    moderator_id: Mapped[uuid.UUID | None] = mapped_column(info=user_reference())
    body: Mapped[str] = mapped_column(String(200))


def test_the_marker_keeps_other_info() -> None:
    assert Message.__table__.c.sender_id.info["note"] == "kept"


@pytest.fixture
def session_factory(service_db: str) -> Iterator[sessionmaker[Session]]:
    engine = create_engine(driver_url(service_db, "psycopg"))
    Base.metadata.create_all(engine)
    yield sessionmaker(engine)
    engine.dispose()


def count(factory: sessionmaker[Session], model: type[Base]) -> int:
    with factory() as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


async def test_a_flush_with_an_unknown_or_deleted_user_fails_naming_column_and_id(
    server: AuthServer, settings, session_factory: sessionmaker[Session]
) -> None:
    active, (deleted,) = await seed_users(settings.database_url, 40, 1)
    unknown = uuid.uuid4()
    counter = SyncCounter()

    def run() -> None:
        with SyncAuthClient(server.address, timeout=5, interceptors=[counter]) as auth:
            remove = check_user_references(session_factory, auth)
            with session_factory() as session:
                group = ChatGroup(id=1, name="general")
                session.add(group)
                session.add_all(GroupMember(group_id=1, user_id=uid) for uid in active)
                session.add(Message(id=1, sender_id=active[0], body="hello"))
                session.commit()
            # 41 new references, one flush: one BatchUserExists
            assert counter.calls == {"BatchUserExists": 1}
            assert counter.batch_sizes == [40]

            with session_factory() as session:
                session.add(GroupMember(group_id=1, user_id=unknown))
                session.add(Message(id=2, sender_id=str(deleted), body="x"))
                with pytest.raises(UserReferenceError) as info:
                    session.flush()
                error = info.value
                assert isinstance(error, UserNotFoundError)
                assert set(error.references) == {
                    ("group_members.user_id", unknown),
                    ("group_messages.sender_id", deleted),
                }
                assert f"group_members.user_id = {unknown}" in str(error)
                assert set(error.user_ids) == {unknown, deleted}
                session.rollback()
            assert count(session_factory, GroupMember) == 40
            assert count(session_factory, Message) == 1

            with session_factory() as session:
                session.add(Message(id=3, sender_id=active[1], moderator_id="nope", body="x"))
                with pytest.raises(InvalidRequestError, match=r"group_messages\.moderator_id"):
                    session.flush()
                session.rollback()
            remove()
            with session_factory() as session:  # the check is gone
                session.add(GroupMember(group_id=1, user_id=uuid.uuid4()))
                session.commit()

    await asyncio.to_thread(run)


async def test_only_new_or_changed_references_are_checked(
    server: AuthServer, settings, session_factory: sessionmaker[Session], admin_stub
) -> None:
    (alice, bob), _ = await seed_users(settings.database_url, 2)
    counter = SyncCounter()

    def run() -> None:
        with SyncAuthClient(
            server.address,
            timeout=5,
            interceptors=[counter],
            cache=CacheConfig(positive_ttl=0),
        ) as auth:
            check_user_references(session_factory, auth)
            with session_factory() as session:
                session.add(Message(id=1, sender_id=alice, moderator_id=None, body="hi"))
                session.commit()
            sent = counter.total
            with session_factory() as session:
                message = session.get(Message, 1)
                assert message is not None
                message.body = "edited"  # the reference did not change: no lookup
                session.commit()
            assert counter.total == sent
            with session_factory() as session:
                message = session.get(Message, 1)
                assert message is not None
                message.moderator_id = bob  # a changed reference is checked
                session.commit()
            assert counter.total == sent + 1
            with session_factory() as session:
                message = session.get(Message, 1)
                assert message is not None
                message.moderator_id = uuid.uuid4()
                with pytest.raises(UserReferenceError, match=r"group_messages\.moderator_id"):
                    session.commit()

    await asyncio.to_thread(run)


async def test_an_unreachable_auth_service_follows_the_fallback_policy(
    session_factory: sessionmaker[Session],
) -> None:
    down = f"127.0.0.1:{free_port()}"
    unverified: list[tuple[uuid.UUID, ...]] = []

    def run() -> None:
        with SyncAuthClient(down, timeout=0.3, on_unverified=unverified.append) as auth:
            remove = check_user_references(session_factory, auth)
            with session_factory() as session:
                session.add(Message(id=1, sender_id=uuid.uuid4(), body="x"))
                with pytest.raises(ServiceUnavailableError):
                    session.flush()
                session.rollback()
            remove()
        with SyncAuthClient(
            down, timeout=0.3, fallback=FallbackPolicy.FAIL_OPEN, on_unverified=unverified.append
        ) as auth:
            remove = check_user_references(session_factory, auth)
            user = uuid.uuid4()
            with session_factory() as session:
                session.add(Message(id=2, sender_id=user, body="x"))
                session.commit()
            assert unverified == [(user,)]
            remove()

    await asyncio.to_thread(run)
    assert count(session_factory, Message) == 1


async def test_an_async_session_is_checked_with_an_async_client(
    server: AuthServer, settings, service_db: str
) -> None:
    (alice,), (gone,) = await seed_users(settings.database_url, 1, 1)
    engine = create_async_engine(driver_url(service_db, "asyncpg"))
    try:
        async with engine.begin() as conn:
            await conn.run_sync(Base.metadata.create_all)
        factory = async_sessionmaker(engine)
        async with AuthClient(server.address, timeout=5) as auth:
            check_user_references(factory, auth)
            async with factory() as session:
                session.add(Message(id=1, sender_id=alice, body="hi"))
                await session.commit()
            async with factory() as session:
                session.add(Message(id=2, sender_id=gone, body="x"))
                with pytest.raises(UserReferenceError) as info:
                    await session.commit()
                assert info.value.references == (("group_messages.sender_id", gone),)
            async with factory() as session:
                assert await session.scalar(select(func.count()).select_from(Message)) == 1
            # Other sessions (no check installed) are not affected.
            other = async_sessionmaker(engine)
            async with other() as session:
                session.add(Message(id=3, sender_id=uuid.uuid4(), body="unchecked"))
                await session.commit()
    finally:
        await engine.dispose()


def test_an_async_client_cannot_check_a_sync_session(service_db: str) -> None:
    engine = create_engine(driver_url(service_db, "psycopg"))
    Base.metadata.create_all(engine)
    factory = sessionmaker(engine)
    client = AuthClient(f"127.0.0.1:{free_port()}")
    check_user_references(factory, client)
    try:
        with factory() as session:
            session.add(Message(id=1, sender_id=uuid.uuid4(), body="x"))
            with pytest.raises(TypeError, match="SyncAuthClient"):
                session.flush()
    finally:
        engine.dispose()
    with pytest.raises(TypeError):
        check_user_references(factory, object())  # type: ignore[arg-type]
