"""Callers, scopes and bearer tokens.

Tokens are kept only as SHA-256 digests; a presented token is hashed and compared
by digest, so neither memory nor timing reveals the secret.
Tokens never appear in logs or in `repr`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

SCOPE_READ = "users:read"
SCOPE_ADMIN = "users:admin"


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is calling: a service name (for logs and metrics) and its scopes."""

    name: str
    scopes: frozenset[str]

    def has(self, scope: str) -> bool:
        return scope in self.scopes


ANONYMOUS = Caller("anonymous", frozenset())


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


class TokenRegistry:
    """Maps bearer tokens to callers. Holds digests only."""

    def __init__(self, entries: Iterable[tuple[str, Caller]] = ()) -> None:
        self._by_digest: dict[bytes, Caller] = {}
        for token, caller in entries:
            self._by_digest[_digest(token)] = caller

    @classmethod
    def admins(cls, tokens: Sequence[str]) -> TokenRegistry:
        scopes = frozenset({SCOPE_ADMIN, SCOPE_READ})
        return cls((token, Caller("admin", scopes)) for token in tokens)

    def __len__(self) -> int:
        return len(self._by_digest)

    def __repr__(self) -> str:
        return f"TokenRegistry(<{len(self)} token(s)>)"

    def lookup(self, token: str) -> Caller | None:
        """The caller owning `token`, or None.

        The lookup compares SHA-256 digests, never the token: any timing difference
        depends on the digest of the presented token, which an attacker cannot steer
        towards a stored one without a preimage.
        """
        return self._by_digest.get(_digest(token))


def bearer_token(metadata: Iterable[tuple[str, str | bytes]] | None) -> str | None:
    """The token of an `authorization: Bearer <token>` header, if any."""
    for key, value in metadata or ():
        if key != "authorization" or not isinstance(value, str):
            continue
        scheme, _, token = value.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
        return None
    return None
