"""Step 1 of a call: who calls, and may they call this method.

A missing or unknown bearer token is UNAUTHENTICATED (where reads need no token, a
read without one is the anonymous caller); a known caller without the method's
scope is PERMISSION_DENIED, and still named, so logs and metrics say who was
refused. The refusal is returned, not raised: the call is counted and logged under
that caller like every other before it is answered.
"""

from __future__ import annotations

from collections.abc import Iterable

from auth_service import errors
from auth_service.api.callers import ANONYMOUS, MissingScopeError, TokenRegistry, bearer_token
from auth_service.config.tokens import Caller

Metadata = Iterable[tuple[str, str | bytes]] | None


class Authorization:
    """The callers of one server. `tokens` is replaced as a whole when the token
    file is reloaded (one attribute store)."""

    __slots__ = ("allow_unauthenticated_reads", "tokens")

    def __init__(self, tokens: TokenRegistry, *, allow_unauthenticated_reads: bool) -> None:
        self.tokens = tokens
        self.allow_unauthenticated_reads = allow_unauthenticated_reads

    def check(
        self, metadata: Metadata, scope: str, *, read: bool
    ) -> tuple[Caller, errors.ServiceError | None]:
        """The caller, and why they are refused (None: allowed)."""
        token = bearer_token(metadata)
        if token is None:
            if read and self.allow_unauthenticated_reads:
                return ANONYMOUS, None
            return ANONYMOUS, errors.UnauthenticatedError("missing or malformed bearer token")
        caller = self.tokens.lookup(token)
        if caller is None:
            # Even where reads need no token (dev), a token nobody issued is refused:
            # a wrong token must fail locally as it would in production.
            return ANONYMOUS, errors.UnauthenticatedError("unknown bearer token")
        if not caller.has(scope):
            return caller, MissingScopeError(caller, scope)
        return caller, None


__all__ = ["Authorization"]
