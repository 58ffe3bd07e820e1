"""What both ORM integrations do once they have found the references a write
adds or changes: parse each value (naming the column when it is not a user id),
ask auth-service about the distinct ids in one `users_exist`, and refuse the write
with `UserReferenceError` naming every (column, id) whose user does not exist.

A reference is `(column, value)`: the column as "table.column", the value as the
application set it (`uuid.UUID` or its text form).
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

from auth_client._errors import InvalidRequestError, UserReferenceError
from auth_client._models import parse_user_id

if TYPE_CHECKING:
    from collections.abc import Iterable

    from auth_client._client import AuthClient
    from auth_client._config import FallbackPolicy
    from auth_client._sync import SyncAuthClient

Reference = tuple[str, object]


def parse(references: Iterable[Reference]) -> list[tuple[str, uuid.UUID]]:
    """Each reference with its value as a UUID; `InvalidRequestError` naming the
    column (not echoing the value) when one is not a user id."""
    parsed = []
    for column, value in references:
        try:
            parsed.append((column, parse_user_id(value)))
        except InvalidRequestError as exc:
            raise InvalidRequestError(f"{column}: {exc}") from None
    return parsed


def refuse_missing(parsed: list[tuple[str, uuid.UUID]], answers: dict[uuid.UUID, bool]) -> None:
    missing = [(column, user_id) for column, user_id in parsed if not answers[user_id]]
    if missing:
        raise UserReferenceError(missing)


def check(
    client: SyncAuthClient,
    references: Iterable[Reference],
    *,
    timeout: float | None = None,
    fallback: FallbackPolicy | None = None,
) -> None:
    """Return if every referenced user exists; else raise `UserReferenceError`."""
    parsed = parse(references)
    if parsed:
        ids = list(dict.fromkeys(user_id for _, user_id in parsed))
        refuse_missing(parsed, client.users_exist(ids, timeout=timeout, fallback=fallback))


async def acheck(
    client: AuthClient,
    references: Iterable[Reference],
    *,
    timeout: float | None = None,
    fallback: FallbackPolicy | None = None,
) -> None:
    """`check` with an `AuthClient`, awaited."""
    parsed = parse(references)
    if parsed:
        ids = list(dict.fromkeys(user_id for _, user_id in parsed))
        answers = await client.users_exist(ids, timeout=timeout, fallback=fallback)
        refuse_missing(parsed, answers)


__all__ = ["Reference", "acheck", "check", "parse", "refuse_missing"]
