"""Values handed to callers, and id parsing."""

from __future__ import annotations

import enum
import re
import uuid
from dataclasses import dataclass
from datetime import datetime

from auth_client._errors import InvalidRequestError

# The server accepts the canonical hyphenated form only (any case); so do we, so
# a malformed id fails here, before any network call.
_UUID_TEXT = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)

# Lifecycle states of an id, as cached (ints: cheap to store and compare).
ACTIVE = 1
DELETED = 2
NOT_FOUND = 3


class UserState(enum.IntEnum):
    """What auth-service knows of an id (values match the cached ints and the proto)."""

    ACTIVE = ACTIVE
    DELETED = DELETED
    NOT_FOUND = NOT_FOUND


UserId = uuid.UUID | str
"""A user id: a `uuid.UUID`, or its hyphenated text form."""


def parse_user_id(value: object) -> uuid.UUID:
    """`value` as a UUID; `InvalidRequestError` (without echoing it) if malformed."""
    if isinstance(value, uuid.UUID):
        return value
    if isinstance(value, str):
        if len(value) == 36 and _UUID_TEXT.fullmatch(value) is not None:
            return uuid.UUID(value)
        raise InvalidRequestError("user id must be a UUID in hyphenated text form")
    raise InvalidRequestError(f"user id must be a uuid.UUID or str, not {type(value).__name__}")


@dataclass(frozen=True, slots=True)
class User:
    """The public profile of an active user (auth-service never returns emails)."""

    id: uuid.UUID
    username: str
    display_name: str
    created_at: datetime
    updated_at: datetime
