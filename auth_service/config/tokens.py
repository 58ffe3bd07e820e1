"""Caller tokens as configured: `NAME SCOPES TOKEN` lines (AUTH_TOKENS,
AUTH_TOKENS_FILE) and ADMIN_TOKENS, parsed into `TokenEntry`s that keep only each
token's SHA-256 digest. The message of a `TokenFormatError` names lines, never
token text. `api.callers` looks presented tokens up in these entries.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import os
    from collections.abc import Sequence

SCOPE_READ = "users:read"
SCOPE_ADMIN = "users:admin"
KNOWN_SCOPES = frozenset({SCOPE_READ, SCOPE_ADMIN})
ADMIN_CALLER = "admin"
MIN_TOKEN_LENGTH = 16

_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")
# RFC 6750 `b64token`: what may follow "Bearer " in an authorization header.
_TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")


class TokenFormatError(ValueError):
    """A token list is malformed. The message names lines, never token text."""


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is calling: a service name (for logs and metrics) and its scopes."""

    name: str
    scopes: frozenset[str]

    def has(self, scope: str) -> bool:
        return scope in self.scopes


@dataclass(frozen=True, slots=True)
class TokenEntry:
    """One configured token: the caller it identifies and the token's digest."""

    caller: Caller
    digest: bytes = field(repr=False)


def digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


def parse_tokens(text: str, *, source: str = "line") -> list[TokenEntry]:
    """Parse `NAME SCOPES TOKEN` entries, one per line (or separated by `;`).

    NAME is 1-64 of `A-Z a-z 0-9 . _ -`; SCOPES is a comma-separated list of
    `users:read` / `users:admin`; TOKEN is at least 16 characters of the RFC 6750
    token alphabet. Blank lines and `#` comments are ignored. The same NAME may
    appear on several lines (several valid tokens, e.g. during rotation).
    """
    entries: list[TokenEntry] = []
    problems: list[str] = []
    for number, raw in enumerate(re.split(r"[\n;]", text), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        fields = line.split()
        where = f"{source} {number}"
        if len(fields) != 3:
            problems.append(f"{where}: expected NAME SCOPES TOKEN")
            continue
        name, scope_text, token = fields
        scopes = frozenset(s for s in scope_text.split(",") if s)
        if _NAME.fullmatch(name) is None:
            problems.append(f"{where}: NAME must be 1-64 of letters, digits, '.', '_', '-'")
        elif not scopes or not scopes <= KNOWN_SCOPES:
            known = ", ".join(sorted(KNOWN_SCOPES))
            problems.append(f"{where}: SCOPES must be a comma-separated list of {known}")
        elif len(token) < MIN_TOKEN_LENGTH or _TOKEN.fullmatch(token) is None:
            problems.append(
                f"{where}: TOKEN must be at least {MIN_TOKEN_LENGTH} characters of "
                "A-Z a-z 0-9 - . _ ~ + / (optionally ending in =)"
            )
        else:
            entries.append(TokenEntry(Caller(name, scopes), digest(token)))
    if problems:
        raise TokenFormatError("; ".join(problems))
    return entries


def admin_entries(tokens: Sequence[str]) -> list[TokenEntry]:
    """ADMIN_TOKENS: each token is the caller `admin` with both scopes."""
    caller = Caller(ADMIN_CALLER, frozenset({SCOPE_ADMIN, SCOPE_READ}))
    return [TokenEntry(caller, digest(token)) for token in tokens]


def read_token_file(path: str | os.PathLike[str]) -> list[TokenEntry]:
    """Parse a token file; OSError / TokenFormatError (naming lines, not tokens)."""
    return parse_tokens(Path(path).read_text(encoding="utf-8"), source="line")
