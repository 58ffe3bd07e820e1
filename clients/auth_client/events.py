"""`user_deleted` events for downstream services.

auth-service publishes one `auth.v1.UserDeleted` per deleted user (topic
`user_deleted`, key = user id). Each service runs a `UserDeletedConsumer` that
cleans up its own rows, and, if it uses `AuthClient`, forgets the user in the
client's cache:

    handler = all_of(deduplicated(pool, cleanup), invalidate_cache(auth))
    async with UserDeletedConsumer(handler, bootstrap_servers=..., group_id=...) as c:
        await c.run()

Delivery is at least once; see docs/events.md for the guarantees.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from auth_client._consumer import UserDeletedConsumer
from auth_client._dead_letter import RetryPolicy
from auth_client._dedupe import ProcessedEvents, deduplicated
from auth_client._offsets import ConsumerStats
from auth_client.contract import (
    CONTENT_TYPE,
    DEFAULT_DLQ_TOPIC,
    DEFAULT_TOPIC,
    HEADER_CONTENT_TYPE,
    HEADER_EVENT_ID,
    HEADER_EVENT_TYPE,
    SCHEMA_VERSION,
    USER_DELETED_TYPE,
    EventDecodeError,
    Origin,
    UserDeletedEvent,
    decode_user_deleted,
    encode_user_deleted,
    user_deleted_headers,
)

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

__all__ = [
    "CONTENT_TYPE",
    "DEFAULT_DLQ_TOPIC",
    "DEFAULT_TOPIC",
    "HEADER_CONTENT_TYPE",
    "HEADER_EVENT_ID",
    "HEADER_EVENT_TYPE",
    "SCHEMA_VERSION",
    "USER_DELETED_TYPE",
    "ConsumerStats",
    "EventDecodeError",
    "Origin",
    "ProcessedEvents",
    "RetryPolicy",
    "UserDeletedConsumer",
    "UserDeletedEvent",
    "all_of",
    "decode_user_deleted",
    "deduplicated",
    "encode_user_deleted",
    "invalidate_cache",
    "user_deleted_headers",
]


class _MarksDeleted(Protocol):
    def mark_deleted(self, user_id: str, /) -> None: ...


def invalidate_cache(client: _MarksDeleted) -> Callable[[UserDeletedEvent], Awaitable[None]]:
    """A handler that makes `client` (an `AuthClient`) answer "does not exist" for
    the deleted user at once, whatever positive TTL its cache has."""

    async def handle(event: UserDeletedEvent) -> None:
        client.mark_deleted(event.user_id)

    return handle


def all_of(
    *handlers: Callable[[UserDeletedEvent], Awaitable[None]],
) -> Callable[[UserDeletedEvent], Awaitable[None]]:
    """Run `handlers` in order; a failure stops the chain, and the retry runs all of
    them again (so each must be idempotent, as every handler must be)."""

    async def handle(event: UserDeletedEvent) -> None:
        for handler in handlers:
            await handler(event)

    return handle
