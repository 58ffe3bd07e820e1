"""Values handed to callers, and id parsing (`UserState` and the id format are the
contract's: `auth_client.contract`)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from auth_client._errors import InvalidRequestError
from auth_client.contract import USER_ID_TEXT, UserState

# Lifecycle states of an id, as cached (ints: cheap to store and compare).
ACTIVE = int(UserState.ACTIVE)
DELETED = int(UserState.DELETED)
NOT_FOUND = int(UserState.NOT_FOUND)


UserId = uuid.UUID | str
"""A user id: a `uuid.UUID`, or its hyphenated text form."""


def parse_user_id(value: object) -> uuid.UUID:
    """`value` as a UUID; `InvalidRequestError` (without echoing it) if malformed."""
    if isinstance(value, uuid.UUID):
        return value
    if isinstance(value, str):
        if len(value) == 36 and USER_ID_TEXT.fullmatch(value) is not None:
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


__all__ = ["ACTIVE", "DELETED", "NOT_FOUND", "User", "UserId", "UserState", "parse_user_id"]
