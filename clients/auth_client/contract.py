"""The wire contract of auth-service, versioned with this package.

Everything a program needs to talk to auth-service or to read its events without
the server's code:

- the generated messages and stubs of `protos/auth/v1` (package `auth.v1`):
  `auth_pb2` / `auth_pb2_grpc` (AuthService: UserExists, GetUser, BatchUserExists),
  `admin_pb2` / `admin_pb2_grpc` (UserAdminService: CreateUser, DeleteUser),
  `replication_pb2` / `replication_pb2_grpc` (UserReplicationService:
  ExportUserStates) and `events_pb2` (the `UserDeleted` and `UserCreated` events);
- what an id is and what the service knows of it: `USER_ID_PATTERN` (the one
  spelling of an id on the wire: hyphenated UUID text, any case) and `UserState`
  (the numbers of `auth.v1.UserState`; `wire_state` / `wire_states` hand them to
  the generated messages);
- the limits the server enforces (`MAX_BATCH_IDS`);
- request metadata (`bearer_metadata`) and timestamps (`timestamp`, `to_datetime`);
- W3C trace context: the `traceparent` gRPC metadata key and Kafka header
  (`HEADER_TRACEPARENT`), written and read by `format_traceparent` and
  `parse_traceparent` (no OpenTelemetry needed to use them);
- the `user_deleted` Kafka contract: key = the user id as text, value = a serialized
  `auth.v1.UserDeleted`, headers `event-id`, `event-type` (`auth.v1.UserDeleted`) and
  `content-type` (`application/x-protobuf`); `encode_user_deleted`,
  `decode_user_deleted` and `event_headers` build and read it;
- the `user_created` Kafka contract, the same with `auth.v1.UserCreated`
  (`encode_user_created`, `decode_user_created`); both kinds of event carry a
  `position` from one sequence (commit order, no holes: docs/events.md);
- the export of every user's state (`ExportUserStates`): `export_page` builds a
  page, `read_export_page` reads one (16-byte big-endian ids, ascending).

auth-service itself imports the contract from here, so client and server cannot
disagree. The generated modules are regenerated from `protos/` by
`scripts/gen_protos.py`; a test fails when they are stale.
"""

from __future__ import annotations

import enum
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import cast

from google.protobuf.message import DecodeError
from google.protobuf.timestamp_pb2 import Timestamp

from auth_client._proto.auth.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    auth_pb2,
    auth_pb2_grpc,
    events_pb2,
    replication_pb2,
    replication_pb2_grpc,
)

__all__ = [
    "CONTENT_TYPE",
    "DEFAULT_CREATED_TOPIC",
    "DEFAULT_DLQ_TOPIC",
    "DEFAULT_TOPIC",
    "EXPORT_PAGE_SIZE",
    "HEADER_CONTENT_TYPE",
    "HEADER_EVENT_ID",
    "HEADER_EVENT_TYPE",
    "HEADER_TRACEPARENT",
    "MAX_BATCH_IDS",
    "MAX_EXPORT_PAGE_SIZE",
    "SCHEMA_VERSION",
    "USER_CREATED_TYPE",
    "USER_DELETED_TYPE",
    "USER_ID_PATTERN",
    "USER_ID_TEXT",
    "EventDecodeError",
    "Headers",
    "Origin",
    "UserCreatedEvent",
    "UserDeletedEvent",
    "UserState",
    "admin_pb2",
    "admin_pb2_grpc",
    "auth_pb2",
    "auth_pb2_grpc",
    "bearer_metadata",
    "decode_user_created",
    "decode_user_deleted",
    "encode_user_created",
    "encode_user_deleted",
    "event_headers",
    "events_pb2",
    "export_page",
    "format_traceparent",
    "header",
    "parse_traceparent",
    "read_export_page",
    "replication_pb2",
    "replication_pb2_grpc",
    "timestamp",
    "to_datetime",
    "user_deleted_headers",
    "wire_state",
    "wire_states",
]

MAX_BATCH_IDS = 1000
"""The most ids one BatchUserExists request may carry (more is INVALID_ARGUMENT)."""

EXPORT_PAGE_SIZE = 10_000
"""Users per ExportUserStates page when the request leaves `page_size` 0."""
MAX_EXPORT_PAGE_SIZE = 100_000
"""The largest `page_size` an ExportUserStates request may ask for."""

USER_ID_PATTERN = "[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
"""A user id as the service accepts it: the canonical, hyphenated UUID text (any
case). Braces, `urn:` prefixes and hyphen-less forms are refused, so one id has one
spelling on the wire; the client refuses them too, before any call."""
USER_ID_TEXT = re.compile(USER_ID_PATTERN)


class UserState(enum.IntEnum):
    """What auth-service knows of an id. The numbers are those of `auth.v1.UserState`,
    so a state goes into a response (and comes out of one) as it is. DELETED is final:
    ids are never reused."""

    ACTIVE = 1
    DELETED = 2
    NOT_FOUND = 3


def wire_state(state: int) -> auth_pb2.UserState.ValueType:
    """`state` (a UserState or its number) as the generated messages type it."""
    return cast("auth_pb2.UserState.ValueType", state)


def wire_states(states: list[int]) -> list[auth_pb2.UserState.ValueType]:
    """A list of states as the generated messages type them (no copy)."""
    return cast("list[auth_pb2.UserState.ValueType]", states)


DEFAULT_TOPIC = "user_deleted"
DEFAULT_DLQ_TOPIC = "user_deleted.dlq"
USER_DELETED_TYPE = "auth.v1.UserDeleted"
DEFAULT_CREATED_TOPIC = "user_created"
USER_CREATED_TYPE = "auth.v1.UserCreated"
CONTENT_TYPE = "application/x-protobuf"
SCHEMA_VERSION = 1

HEADER_EVENT_ID = "event-id"
HEADER_EVENT_TYPE = "event-type"
HEADER_CONTENT_TYPE = "content-type"
HEADER_TRACEPARENT = "traceparent"
"""W3C trace context: the gRPC metadata key of a traced call and the Kafka header
of a traced event (https://www.w3.org/TR/trace-context/)."""

Headers = Sequence[tuple[str, bytes]]


def bearer_metadata(token: str | None) -> tuple[tuple[str, str], ...]:
    """The call metadata that presents `token` (empty without a token)."""
    return (("authorization", f"Bearer {token}"),) if token else ()


def format_traceparent(trace_id: int, span_id: int, sampled: bool) -> str:
    """The W3C `traceparent` value (version 00) naming span `span_id` of trace
    `trace_id` as the parent of what the receiver does."""
    return f"00-{trace_id:032x}-{span_id:016x}-{'01' if sampled else '00'}"


_HEX = frozenset("0123456789abcdef")


def parse_traceparent(value: str | bytes | None) -> tuple[int, int, int] | None:
    """(trace id, parent span id, trace flags) of a W3C `traceparent` value, or None
    when it is missing or malformed (the receiver then starts a new trace). Future
    versions are read as version 00, as the specification asks."""
    if isinstance(value, bytes):
        value = value.decode("ascii", errors="replace")
    if not value or len(value) < 55:
        return None
    version, trace, span, flags = value[:2], value[3:35], value[36:52], value[53:55]
    if (
        value[2] != "-"
        or value[35] != "-"
        or value[52] != "-"
        or not _HEX.issuperset(version + trace + span + flags)
        or version == "ff"
        or (len(value) > 55 and (version == "00" or value[55] != "-"))
    ):
        return None
    trace_id, span_id = int(trace, 16), int(span, 16)
    if not trace_id or not span_id:
        return None
    return trace_id, span_id, int(flags, 16)


def timestamp(value: datetime) -> Timestamp:
    """A protobuf Timestamp for an aware datetime."""
    ts = Timestamp()
    ts.FromDatetime(value)
    return ts


def to_datetime(value: Timestamp) -> datetime:
    """An aware (UTC) datetime for a protobuf Timestamp."""
    return value.ToDatetime(tzinfo=UTC)


class EventDecodeError(ValueError):
    """A message is not a valid `auth.v1.UserDeleted` (or `auth.v1.UserCreated`)
    event this library understands."""


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
    idempotent (or deduplicate on `event_id`). It carries ids and times only, never
    the deleted user's personal data."""

    event_id: str
    user_id: str
    deleted_at: datetime
    occurred_at: datetime
    schema_version: int = SCHEMA_VERSION
    origin: Origin | None = field(default=None, compare=False)
    # Commit order among all user events (1, 2, 3, ... without holes); 0 when
    # written before positions existed. A redelivery carries the same one.
    position: int = field(default=0, compare=False)


@dataclass(frozen=True, slots=True)
class UserCreatedEvent:
    """A user was created in auth-service (ids and times only; the profile is
    `AuthService.GetUser`'s). Delivered at least once, like `UserDeletedEvent`."""

    event_id: str
    user_id: str
    created_at: datetime
    occurred_at: datetime
    schema_version: int = SCHEMA_VERSION
    origin: Origin | None = field(default=None, compare=False)
    position: int = field(default=0, compare=False)


def encode_user_deleted(event: UserDeletedEvent) -> bytes:
    """The Kafka value for `event` (a serialized `auth.v1.UserDeleted`)."""
    return events_pb2.UserDeleted(
        event_id=event.event_id,
        user_id=event.user_id,
        deleted_at=timestamp(event.deleted_at),
        occurred_at=timestamp(event.occurred_at),
        schema_version=event.schema_version,
        position=event.position,
    ).SerializeToString()


def encode_user_created(event: UserCreatedEvent) -> bytes:
    """The Kafka value for `event` (a serialized `auth.v1.UserCreated`)."""
    return events_pb2.UserCreated(
        event_id=event.event_id,
        user_id=event.user_id,
        created_at=timestamp(event.created_at),
        occurred_at=timestamp(event.occurred_at),
        schema_version=event.schema_version,
        position=event.position,
    ).SerializeToString()


def event_headers(
    event_id: str, event_type: str = USER_DELETED_TYPE, **extra: str
) -> list[tuple[str, bytes]]:
    """The Kafka headers of an event: id, type, content type, and `extra` ones
    (e.g. `traceparent`)."""
    return [
        (HEADER_EVENT_ID, event_id.encode()),
        (HEADER_EVENT_TYPE, event_type.encode()),
        (HEADER_CONTENT_TYPE, CONTENT_TYPE.encode()),
        *((name, value.encode()) for name, value in extra.items()),
    ]


def user_deleted_headers(event_id: str) -> list[tuple[str, bytes]]:
    """The headers of a `user_deleted` event."""
    return event_headers(event_id)


def header(headers: Headers | None, name: str) -> str | None:
    """The last value of header `name` as text, or None."""
    found: str | None = None
    for key, value in headers or ():
        if key == name and value is not None:
            found = value.decode("utf-8", errors="replace")
    return found


def _parse_event(value: bytes | None, msg: events_pb2.UserDeleted | events_pb2.UserCreated) -> str:
    """Parse `value` into `msg` and check what every user event must have; the
    canonical user id."""
    name = msg.DESCRIPTOR.full_name
    if not value:
        raise EventDecodeError("empty message value")
    try:
        msg.ParseFromString(value)
    except DecodeError as exc:
        raise EventDecodeError(f"value is not a serialized {name}") from exc
    if msg.schema_version > SCHEMA_VERSION:
        raise EventDecodeError(
            f"schema_version {msg.schema_version} is newer than supported ({SCHEMA_VERSION})"
        )
    try:
        user_id = str(uuid.UUID(msg.user_id))
        uuid.UUID(msg.event_id)
    except ValueError as exc:
        raise EventDecodeError("event_id and user_id must be UUIDs") from exc
    return user_id


def decode_user_deleted(value: bytes | None, origin: Origin | None = None) -> UserDeletedEvent:
    """Parse and validate a Kafka value. Raises EventDecodeError for a message that
    is not a well-formed event of a schema version this library supports."""
    msg = events_pb2.UserDeleted()
    user_id = _parse_event(value, msg)
    if not msg.HasField("deleted_at"):
        raise EventDecodeError("deleted_at is missing")
    return UserDeletedEvent(
        event_id=msg.event_id,
        user_id=user_id,
        deleted_at=to_datetime(msg.deleted_at),
        occurred_at=to_datetime(msg.occurred_at),
        schema_version=msg.schema_version or SCHEMA_VERSION,
        origin=origin,
        position=msg.position,
    )


def decode_user_created(value: bytes | None, origin: Origin | None = None) -> UserCreatedEvent:
    """`decode_user_deleted` for an `auth.v1.UserCreated` value."""
    msg = events_pb2.UserCreated()
    user_id = _parse_event(value, msg)
    if not msg.HasField("created_at"):
        raise EventDecodeError("created_at is missing")
    return UserCreatedEvent(
        event_id=msg.event_id,
        user_id=user_id,
        created_at=to_datetime(msg.created_at),
        occurred_at=to_datetime(msg.occurred_at),
        schema_version=msg.schema_version or SCHEMA_VERSION,
        origin=origin,
        position=msg.position,
    )


def export_page(
    position: int, ids: bytes, states: bytes
) -> replication_pb2.ExportUserStatesResponse:
    """One ExportUserStates page: `ids` 16 bytes each (big-endian, ascending),
    `states` one UserState number (1 or 2) per id."""
    if len(ids) != 16 * len(states):
        raise ValueError("one state per 16-byte id")
    page = replication_pb2.ExportUserStatesResponse(position=position, user_ids=ids)
    page.states.extend(wire_states(list(states)))
    return page


def read_export_page(page: replication_pb2.ExportUserStatesResponse) -> tuple[bytes, bytes]:
    """The ids (16 bytes each) and one deleted flag per id (1 = DELETED, 0 = ACTIVE)
    of a page. Raises ValueError for a page that breaks the contract (lengths, a
    state other than ACTIVE or DELETED)."""
    ids = page.user_ids
    states = bytes(page.states)
    if len(ids) != 16 * len(states):
        raise ValueError("an export page must carry one state per 16-byte id")
    if states.count(UserState.ACTIVE) + states.count(UserState.DELETED) != len(states):
        raise ValueError("an export page may only hold ACTIVE and DELETED states")
    return ids, states.translate(_DELETED_FLAGS)


# UserState number -> deleted flag (ACTIVE 1 -> 0, DELETED 2 -> 1).
_DELETED_FLAGS = bytes.maketrans(b"\x01\x02", b"\x00\x01")
