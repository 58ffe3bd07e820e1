"""Validation of request fields: user ids and user-supplied text. Errors never echo
the input."""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence

from auth_client.contract import (
    EXPORT_PAGE_SIZE,
    MAX_BATCH_IDS,
    MAX_EXPORT_PAGE_SIZE,
    USER_ID_PATTERN,
    USER_ID_TEXT,
)
from auth_service.errors import InvalidArgumentError

_USERNAME = re.compile(r"[A-Za-z0-9._-]{1,64}")
_MAX_DISPLAY_NAME = 128
_MAX_EMAIL = 254


def parse_user_id(text: str, field: str = "user_id") -> uuid.UUID:
    """Parse a user id; InvalidArgumentError (without echoing the input) if malformed."""
    return uuid.UUID(canonical_user_id(text, field))


def canonical_user_id(text: str, field: str = "user_id") -> str:
    """A valid id in its one spelling (lower case), for lookups by text."""
    if len(text) != 36 or USER_ID_TEXT.fullmatch(text) is None:
        raise InvalidArgumentError(f"{field} must be a UUID in hyphenated text form")
    return text.lower()


_UUID = USER_ID_PATTERN
# A whole batch, comma-joined, checked by one regular expression in C.
_BATCH = re.compile(f"(?:{_UUID},)*{_UUID}")


def canonical_user_ids(texts: Sequence[str]) -> list[str]:
    """Validate a batch of ids; return them in lower case (one spelling per id).

    Works on text throughout, and on the whole batch at once where it can (no
    `uuid.UUID` objects, no per-id Python calls on the fast path); PostgreSQL
    parses the ids once more in the query.
    """
    if len(texts) > MAX_BATCH_IDS:
        raise InvalidArgumentError(
            f"user_ids holds {len(texts)} ids; at most {MAX_BATCH_IDS} allowed"
        )
    if not texts:
        return []
    joined = ",".join(texts)
    if _BATCH.fullmatch(joined) is None:
        for index, text in enumerate(texts):
            parse_user_id(text, f"user_ids[{index}]")  # raises for the first bad one
    return joined.lower().split(",")


def export_page_size(requested: int) -> int:
    """ExportUserStates' page size: 0 is the default, more than the maximum refused."""
    if requested > MAX_EXPORT_PAGE_SIZE:
        raise InvalidArgumentError(f"page_size must be at most {MAX_EXPORT_PAGE_SIZE}")
    return requested or EXPORT_PAGE_SIZE


def check_username(text: str) -> str:
    if _USERNAME.fullmatch(text) is None:
        raise InvalidArgumentError(
            "username must be 1-64 characters of letters, digits, '.', '_' or '-'"
        )
    return text


def check_display_name(text: str, username: str) -> str:
    value = text.strip() or username
    if len(value) > _MAX_DISPLAY_NAME or not value.isprintable():
        raise InvalidArgumentError(
            f"display_name must be at most {_MAX_DISPLAY_NAME} printable characters"
        )
    return value


def check_email(text: str | None) -> str | None:
    if text is None or text == "":
        return None
    local, at, domain = text.partition("@")
    if (
        len(text) > _MAX_EMAIL
        or not at
        or not local
        or "." not in domain
        or not text.isprintable()
        or " " in text
    ):
        raise InvalidArgumentError("email is not a valid address")
    return text
