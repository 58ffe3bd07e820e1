"""The `user_deleted` wire contract: Kafka headers, the decoded event, the codec.

On Kafka: key = the user id as text, value = a serialized `auth.v1.UserDeleted`,
headers `event-id`, `event-type` (`auth.v1.UserDeleted`) and `content-type`
(`application/x-protobuf`).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from google.protobuf.message import DecodeError
from google.protobuf.timestamp_pb2 import Timestamp

from auth_client._proto.auth.v1 import events_pb2

DEFAULT_TOPIC = "user_deleted"
DEFAULT_DLQ_TOPIC = "user_deleted.dlq"
USER_DELETED_TYPE = "auth.v1.UserDeleted"
CONTENT_TYPE = "application/x-protobuf"
SCHEMA_VERSION = 1

HEADER_EVENT_ID = "event-id"
HEADER_EVENT_TYPE = "event-type"
HEADER_CONTENT_TYPE = "content-type"

Headers = Sequence[tuple[str, bytes]]


class EventDecodeError(ValueError):
    """A message is not a valid `auth.v1.UserDeleted` event this library understands."""


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a consumed event was read from."""

    topic: str
    partition: int
    offset: int
    key: str | None


@dataclass(frozen=True, slots=True)
class UserDeletedEvent:
    """A user was deleted in auth-service. Delivered at least once: handlers must be
    idempotent (or deduplicate on `event_id`)."""

    event_id: str
    user_id: str
    deleted_at: datetime
    occurred_at: datetime
    schema_version: int = SCHEMA_VERSION
    origin: Origin | None = field(default=None, compare=False)


def _timestamp(value: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(value)
    return ts


def encode_user_deleted(event: UserDeletedEvent) -> bytes:
    """The Kafka value for `event` (a serialized `auth.v1.UserDeleted`)."""
    return events_pb2.UserDeleted(
        event_id=event.event_id,
        user_id=event.user_id,
        deleted_at=_timestamp(event.deleted_at),
        occurred_at=_timestamp(event.occurred_at),
        schema_version=event.schema_version,
    ).SerializeToString()


def user_deleted_headers(event_id: str) -> list[tuple[str, bytes]]:
    return [
        (HEADER_EVENT_ID, event_id.encode()),
        (HEADER_EVENT_TYPE, USER_DELETED_TYPE.encode()),
        (HEADER_CONTENT_TYPE, CONTENT_TYPE.encode()),
    ]


def header(headers: Headers | None, name: str) -> str | None:
    """The last value of header `name` as text, or None."""
    found: str | None = None
    for key, value in headers or ():
        if key == name and value is not None:
            found = value.decode("utf-8", errors="replace")
    return found


def decode_user_deleted(value: bytes | None, origin: Origin | None = None) -> UserDeletedEvent:
    """Parse and validate a Kafka value. Raises EventDecodeError for a message that
    is not a well-formed event of a schema version this library supports."""
    if not value:
        raise EventDecodeError("empty message value")
    msg = events_pb2.UserDeleted()
    try:
        msg.ParseFromString(value)
    except DecodeError as exc:
        raise EventDecodeError("value is not a serialized auth.v1.UserDeleted") from exc
    if msg.schema_version > SCHEMA_VERSION:
        raise EventDecodeError(
            f"schema_version {msg.schema_version} is newer than supported ({SCHEMA_VERSION})"
        )
    try:
        user_id = str(uuid.UUID(msg.user_id))
        uuid.UUID(msg.event_id)
    except ValueError as exc:
        raise EventDecodeError("event_id and user_id must be UUIDs") from exc
    if not msg.HasField("deleted_at"):
        raise EventDecodeError("deleted_at is missing")
    return UserDeletedEvent(
        event_id=msg.event_id,
        user_id=user_id,
        deleted_at=msg.deleted_at.ToDatetime(tzinfo=UTC),
        occurred_at=msg.occurred_at.ToDatetime(tzinfo=UTC),
        schema_version=msg.schema_version or SCHEMA_VERSION,
        origin=origin,
    )
