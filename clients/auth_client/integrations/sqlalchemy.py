"""SQLAlchemy 2.x: columns that reference auth-service users, checked before every
flush (extra `sqlalchemy`).

Declare a reference with a marker in the column's `info` (the column keeps whatever
type it has, so the table does not change, and migrations see no new type):

    from auth_client.integrations.sqlalchemy import check_user_references, user_reference

    class GroupMember(Base):
        __tablename__ = "group_members"
        group_id: Mapped[int] = mapped_column(ForeignKey("chat_groups.id"), primary_key=True)
        # was: mapped_column(ForeignKey("users.id"), primary_key=True)
        user_id: Mapped[uuid.UUID] = mapped_column(primary_key=True, info=user_reference())

    Session = sessionmaker(engine)
    check_user_references(Session, auth)            # auth: a SyncAuthClient

    AsyncSession_ = async_sessionmaker(async_engine)
    check_user_references(AsyncSession_, auth)      # auth: an AuthClient (awaited)

Before each flush of a session of that target, the values of every marked column of
every new object, and of every changed one on a dirty object, are checked in one
`users_exist` (RPCs of at most 1,000 ids; cached answers need none). A user that does
not exist or is deleted fails the flush with `UserReferenceError` naming each
"table.column = id"; nothing is flushed, and the session stays usable (expunge or fix
the objects). While auth-service cannot answer, the client's fallback policy decides
(`fallback=` overrides it for these checks): FAIL_CLOSED fails the flush with
`ServiceUnavailableError`. NULL references are not checked. Core statements
(`session.execute(insert(...))`) are not flushes and are not checked.

With an AsyncSession the flush runs in SQLAlchemy's greenlet, and an `AuthClient` is
awaited on the session's own event loop (`sqlalchemy.util.await_only`); a
`SyncAuthClient` works with both kinds of session but blocks the event loop while it
waits, so give an AsyncSession an `AuthClient`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from typing import Any

from sqlalchemy import event, inspect
from sqlalchemy.exc import MissingGreenlet
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import ColumnProperty, Mapper, Session
from sqlalchemy.util import await_only

from auth_client._client import AuthClient
from auth_client._config import FallbackPolicy
from auth_client._sync import SyncAuthClient
from auth_client.integrations import _references
from auth_client.integrations._references import Reference

USER_REFERENCE = "auth_client.user_reference"
"""The key `user_reference()` sets in a column's `info`."""


def user_reference(**info: Any) -> dict[str, Any]:
    """`info=` for a column holding an auth-service user id (other `info` entries may
    be passed along): `mapped_column(info=user_reference())`."""
    return {**info, USER_REFERENCE: True}


@functools.cache
def _reference_columns(mapper: Mapper[Any]) -> tuple[tuple[str, str], ...]:
    """(attribute key, "table.column") of each marked column of `mapper`'s class."""
    found = []
    for prop in mapper.column_attrs:
        if not isinstance(prop, ColumnProperty):
            continue
        for column in prop.columns:
            if column.info.get(USER_REFERENCE):
                table = getattr(column, "table", None)
                where = getattr(table, "fullname", None) or mapper.class_.__name__
                found.append((prop.key, f"{where}.{column.name}"))
                break
    return tuple(found)


def changed_references(session: Session) -> Iterator[Reference]:
    """The user references the next flush of `session` writes: every marked
    column of new objects, the changed ones of dirty objects (NULL skipped)."""
    for obj in session.new:
        state = inspect(obj)
        for key, column in _reference_columns(state.mapper):
            value = state.dict.get(key)
            if value is not None:
                yield column, value
    for obj in session.dirty:
        state = inspect(obj)
        for key, column in _reference_columns(state.mapper):
            added = state.attrs[key].history.added
            if added and added[0] is not None:
                yield column, added[0]


Target = Session | type[Session] | Any


def _sync_target(target: Target) -> Any:
    """What SQLAlchemy's session events accept, for `target`: an AsyncSession's
    sync session; an async_sessionmaker's sync session class (one made for it, when
    it has none of its own, so that no other session is affected)."""
    if isinstance(target, AsyncSession):
        return target.sync_session
    if isinstance(target, async_sessionmaker):
        cls = target.kw.get("sync_session_class")
        if cls is None or cls is Session:
            cls = type("UserReferencesSession", (Session,), {})
            target.configure(sync_session_class=cls)
        return cls
    return target


def check_user_references(
    target: Target,
    client: SyncAuthClient | AuthClient,
    *,
    timeout: float | None = None,
    fallback: FallbackPolicy | None = None,
) -> Callable[[], None]:
    """Check the user references of every flush of sessions of `target` (a
    sessionmaker, an async_sessionmaker, a Session or AsyncSession, or a Session
    subclass) with `client`. Returns a function that removes the check."""
    if not isinstance(client, SyncAuthClient | AuthClient):
        raise TypeError(
            f"client must be a SyncAuthClient or AuthClient, not {type(client).__name__}"
        )

    def before_flush(session: Session, _context: object, _instances: object) -> None:
        references = list(changed_references(session))
        if not references:
            return
        if isinstance(client, SyncAuthClient):
            _references.check(client, references, timeout=timeout, fallback=fallback)
            return
        try:
            await_only(_references.acheck(client, references, timeout=timeout, fallback=fallback))
        except MissingGreenlet:
            raise TypeError(
                "an AuthClient (asyncio) checks the flushes of an AsyncSession; give a "
                "synchronous Session a SyncAuthClient"
            ) from None

    sync_target = _sync_target(target)
    event.listen(sync_target, "before_flush", before_flush)

    def remove() -> None:
        event.remove(sync_target, "before_flush", before_flush)

    return remove


__all__ = ["USER_REFERENCE", "changed_references", "check_user_references", "user_reference"]
