"""Messaging service: add a user to a group chat, validating the user with
auth-service instead of a foreign key into the auth database.

Before, the messaging service read the auth database and relied on an FK:

    SELECT EXISTS(SELECT 1 FROM users WHERE id = $1)        -- is the user real?
    SELECT username FROM users WHERE id = $1                -- for "alice joined"
    INSERT INTO group_members (group_id, user_id) ...       -- user_id REFERENCES users(id)

Now its SQLAlchemy model declares the reference instead of the foreign key
(`mapped_column(info=user_reference())`), and `check_user_references` has every flush
check the references it writes against auth-service (one batched lookup per flush):
adding a user that does not exist or is deleted fails the flush with
`UserReferenceError` naming the column and id. `get_user` gives the profile for the
"joined" message. Its own database's schema is `messaging_schema.sql` (no reference
to `users`). Needs `pip install 'auth-client[sqlalchemy]'`.

Run it against `auth-service dev` (from the repository root):

    # terminal 1: embedded PostgreSQL + auth-service on 127.0.0.1:50051; it prints
    # the demo users' ids and logs "embedded PostgreSQL on 127.0.0.1:<PGPORT>"
    .venv/bin/auth-service dev

    # terminal 2: the example keeps its tables in its own database "messaging" on
    # that PostgreSQL (created if missing)
    .venv/bin/python examples/messaging_add_member.py \
        --target 127.0.0.1:50051 \
        --database-url postgresql://postgres@127.0.0.1:<PGPORT>/messaging \
        --group general <alice's id>

With OTEL_EXPORTER_OTLP_ENDPOINT set it traces: "add group member" with
auth_client's lookup spans and the insert beneath it (otel_setup.py, docs/tracing.md).

Exit status: 0 added (or already a member; prints JSON), 1 no such user,
2 malformed id, 3 auth-service unavailable, 4 the database cannot be reached (bad
--database-url or server down); 1 to 4 insert nothing and print one line on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import uuid
from datetime import datetime
from pathlib import Path

from otel_setup import span, start_tracing
from service_db import EXIT_DATABASE_UNAVAILABLE, DatabaseUnavailableError, connect_creating
from sqlalchemy import ForeignKey, Identity, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from auth_client import (
    AuthClient,
    InvalidRequestError,
    ServiceUnavailableError,
    UserNotFoundError,
)
from auth_client.integrations.sqlalchemy import check_user_references, user_reference

SCHEMA = Path(__file__).with_name("messaging_schema.sql")


class Base(DeclarativeBase):
    pass


class ChatGroup(Base):
    __tablename__ = "chat_groups"
    id: Mapped[int] = mapped_column(Identity(always=True), primary_key=True)
    name: Mapped[str] = mapped_column(unique=True)


class GroupMember(Base):
    __tablename__ = "group_members"
    group_id: Mapped[int] = mapped_column(ForeignKey("chat_groups.id"), primary_key=True)
    # Was ForeignKey("users.id"): now checked against auth-service before each flush.
    user_id: Mapped[uuid.UUID] = mapped_column(primary_key=True, info=user_reference())
    added_at: Mapped[datetime] = mapped_column(server_default="now()")


class GroupMessage(Base):
    __tablename__ = "group_messages"
    id: Mapped[int] = mapped_column(Identity(always=True), primary_key=True)
    group_id: Mapped[int] = mapped_column(ForeignKey("chat_groups.id"))
    sender_id: Mapped[uuid.UUID | None] = mapped_column(info=user_reference())  # NULL: system
    body: Mapped[str]


def _user_id(text: str) -> uuid.UUID:
    try:
        return uuid.UUID(text)
    except ValueError:
        raise InvalidRequestError("user id must be a UUID in hyphenated text form") from None


async def add_member(args: argparse.Namespace) -> dict[str, object]:
    with span("add group member"):
        return await _add_member(args)


async def _group(session: AsyncSession, name: str) -> ChatGroup:
    group = await session.scalar(select(ChatGroup).where(ChatGroup.name == name))
    if group is None:
        group = ChatGroup(name=name)
        session.add(group)
        await session.flush()
    return group


async def _add_member(args: argparse.Namespace) -> dict[str, object]:
    db = await connect_creating(args.database_url)  # creates the database on first use
    try:
        await db.execute(SCHEMA.read_text())
    finally:
        await db.close()
    user_id = _user_id(args.user_id)
    url = args.database_url.replace("postgresql://", "postgresql+asyncpg://", 1)
    engine = create_async_engine(url)
    try:
        sessions = async_sessionmaker(engine, expire_on_commit=False)
        async with AuthClient(args.target, token=args.token, timeout=args.timeout) as auth:
            check_user_references(sessions, auth)
            async with sessions() as session, session.begin():
                group = await _group(session, args.group)
                added = await session.get(GroupMember, (group.id, user_id)) is None
                if added:
                    session.add(GroupMember(group_id=group.id, user_id=user_id))
                    # The flush checks the new reference: UserReferenceError for an
                    # unknown or deleted user, ServiceUnavailableError when
                    # auth-service cannot answer (the client's fallback policy).
                    await session.flush()
                user = await auth.get_user(user_id)  # the profile, for the message
                if user is None:  # deleted in between
                    raise UserNotFoundError([user_id])
                with span("INSERT group_members"):  # the service's own database
                    if added:
                        session.add(
                            GroupMessage(
                                group_id=group.id,
                                body=f"{user.display_name} (@{user.username}) joined",
                            )
                        )
                    await session.flush()
        return {
            "group": args.group,
            "user_id": str(user.id),
            "username": user.username,
            "added": added,
        }
    finally:
        await engine.dispose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Add a user to a group chat.")
    parser.add_argument("--target", default="127.0.0.1:50051", help="auth-service host:port")
    parser.add_argument("--token", help="bearer token with the users:read scope")
    parser.add_argument("--database-url", required=True, help="the messaging service's database")
    parser.add_argument("--group", default="general", help="group name (created if missing)")
    parser.add_argument("--timeout", type=float, default=2.0, help="auth-service deadline (s)")
    parser.add_argument("user_id", help="id of the user to add")
    args = parser.parse_args(argv)
    stop_tracing = start_tracing("messaging")
    try:
        result = asyncio.run(add_member(args))
    except UserNotFoundError as exc:
        print(f"not added: {exc}", file=sys.stderr)
        return 1
    except InvalidRequestError as exc:
        print(f"not added: {exc}", file=sys.stderr)
        return 2
    except ServiceUnavailableError as exc:
        print(f"not added, try again later: {exc}", file=sys.stderr)
        return 3
    except DatabaseUnavailableError as exc:
        print(f"not added: {exc}", file=sys.stderr)
        return EXIT_DATABASE_UNAVAILABLE
    finally:
        stop_tracing()  # export the spans before the process exits
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
