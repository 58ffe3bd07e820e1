"""Deleting a user: the domain operation behind DeleteUser.

A deletion is one transaction: the soft delete of the users row (with the erasure
of its personal fields, unless a retention period leaves that to the erasure job,
`store.erasure`) and, when it newly deleted the user, the `user_deleted` outbox row
(`outbox.write_user_deleted`, ids and times only). All of it commits or none does,
so a committed deletion always has its event and a second delete of the same user
writes nothing. While tracing, the transaction is one span (`UPDATE users`), and the
outbox row keeps its `traceparent` so the event continues the deletion's trace.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable

from auth_service import tracing
from auth_service.store.outbox import write_user_deleted
from auth_service.store.pool import Budget, Conn
from auth_service.store.users import Deletion, UserRepository

# Runs inside the deletion's transaction for a user that was just deleted; the
# default writes the `user_deleted` outbox row (tests substitute one that fails).
OnDeleted = Callable[[Conn, Deletion], Awaitable[None]]


async def delete_user(
    users: UserRepository,
    user_id: uuid.UUID,
    budget: Budget,
    on_deleted: OnDeleted = write_user_deleted,
    *,
    erase: bool = True,
) -> Deletion | None:
    """Soft-delete `user_id` and record its event, in one transaction. None when
    the id never existed; `Deletion.newly_deleted` is False for a repeated delete
    (which then carries the original `deleted_at`)."""
    with tracing.query("UPDATE", "users") as span:
        async with users.connection(budget) as conn, conn.transaction():
            deletion = await UserRepository.soft_delete(conn, user_id, budget, erase=erase)
            if deletion is not None and deletion.newly_deleted:
                await on_deleted(conn, deletion)
        span.set_attribute("auth.newly_deleted", bool(deletion and deletion.newly_deleted))
    users.changed(str(user_id))
    return deletion
