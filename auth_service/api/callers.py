"""Callers, scopes and bearer tokens at call time.

A caller is a service name plus scopes (`config.tokens` parses the configured
tokens and keeps only their SHA-256 digests). A presented token is hashed and
looked up by digest, so neither memory nor timing reveals a stored secret; tokens
never appear in logs, error messages or `repr`.

`TokenFile` reloads a token file when it changes on disk, so tokens can be
rotated without a restart: list the new token next to the old one (same name),
roll the callers over, then remove the old line.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from auth_service import lifecycle
from auth_service.config.tokens import (
    Caller,
    TokenEntry,
    TokenFormatError,
    digest,
    read_token_file,
)
from auth_service.errors import PermissionDeniedError

if TYPE_CHECKING:
    import os
    from collections.abc import Callable, Iterable, Sequence

log = logging.getLogger(__name__)

ANONYMOUS = Caller("anonymous", frozenset())


class MissingScopeError(PermissionDeniedError):
    """A known caller without the scope a method needs (PERMISSION_DENIED). Carries
    the caller so logs and metrics name who was refused."""

    def __init__(self, caller: Caller, scope: str) -> None:
        super().__init__(f"caller lacks the {scope} scope")
        self.caller = caller


class TokenRegistry:
    """Maps bearer tokens to callers. Holds digests only; immutable once built."""

    __slots__ = ("_by_digest", "_names")

    def __init__(self, entries: Iterable[tuple[str, Caller]] = ()) -> None:
        self._by_digest: dict[bytes, Caller] = {}
        self._names: frozenset[str] = frozenset()
        self._add(TokenEntry(caller, digest(token)) for token, caller in entries)

    @classmethod
    def from_entries(cls, entries: Iterable[TokenEntry]) -> TokenRegistry:
        """Build from parsed entries. TokenFormatError when one token is listed for
        two callers or one caller name is listed with different scopes."""
        registry = cls()
        registry._add(entries)
        return registry

    def _add(self, entries: Iterable[TokenEntry]) -> None:
        scopes_of = {c.name: c.scopes for c in self._by_digest.values()}
        for entry in entries:
            caller = entry.caller
            known = scopes_of.setdefault(caller.name, caller.scopes)
            if known != caller.scopes:
                raise TokenFormatError(f"caller {caller.name!r} is listed with different scopes")
            previous = self._by_digest.setdefault(entry.digest, caller)
            if previous.name != caller.name:
                raise TokenFormatError(
                    f"one token is listed for both {previous.name!r} and {caller.name!r}"
                )
        self._names = frozenset(scopes_of)

    @property
    def callers(self) -> frozenset[str]:
        """Names of the configured callers (for start-up logs)."""
        return self._names

    def __len__(self) -> int:
        return len(self._by_digest)

    def __repr__(self) -> str:
        return f"TokenRegistry(<{len(self)} token(s) for {len(self._names)} caller(s)>)"

    def lookup(self, token: str) -> Caller | None:
        """The caller owning `token`, or None.

        The lookup compares SHA-256 digests, never the token: any timing difference
        depends on the digest of the presented token, which an attacker cannot steer
        towards a stored one without a preimage.
        """
        return self._by_digest.get(digest(token))


def bearer_token(metadata: Iterable[tuple[str, str | bytes]] | None) -> str | None:
    """The token of the `authorization: Bearer <token>` header; None when there is
    none, it is not a bearer token, or there are several (ambiguous: a proxy may
    have added one)."""
    found: str | None = None
    seen = False
    for key, value in metadata or ():
        if key != "authorization":
            continue
        if seen or not isinstance(value, str):
            return None
        seen = True
        scheme, _, token = value.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            found = token.strip()
    return found


class TokenFile(lifecycle.Owner):
    """Keeps a registry in step with a token file: `static` entries (from the
    environment) plus the file's. Polls the file's stat every `interval` seconds
    and reloads it when it changed; a file that fails to parse is logged and the
    previous tokens stay in force. An async context manager; `aclose()` is idempotent.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        static: Sequence[TokenEntry],
        apply: Callable[[TokenRegistry], None],
        interval: float,
    ) -> None:
        super().__init__(f"the token file watcher of {path}")
        self.path = Path(path)
        self._static = tuple(static)
        self._apply = apply
        self._interval = interval
        self._signature: tuple[int, int, int] | None = None
        self._task: asyncio.Task[None] | None = None
        self.reloads = 0

    def _stat(self) -> tuple[int, int, int]:
        st = self.path.stat()  # follows symlinks: a Kubernetes secret swap changes st_ino
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def load(self) -> TokenRegistry:
        """Read the file now and apply it; raises when unreadable or malformed."""
        signature = self._stat()
        registry = TokenRegistry.from_entries([*self._static, *read_token_file(self.path)])
        self._signature = signature
        self._apply(registry)
        return registry

    def check(self) -> bool:
        """Reload if the file changed since the last load. True when reloaded."""
        try:
            if self._stat() == self._signature:
                return False
            registry = self.load()
        except (OSError, TokenFormatError) as exc:
            # The message names lines, never token text.
            log.error(  # noqa: TRY400 - a traceback adds nothing; the message names lines
                "token file %s not reloaded, keeping the previous tokens: %s", self.path, exc
            )
            with contextlib.suppress(OSError):
                self._signature = self._stat()  # do not log the same problem every poll
            return False
        self.reloads += 1
        log.info(
            "token file %s reloaded: %d token(s) for %d caller(s)",
            self.path,
            len(registry),
            len(registry.callers),
        )
        return True

    async def _start(self) -> None:
        self.load()
        if self._interval > 0:
            self._task = asyncio.create_task(self._run(), name="token-file-watcher")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            self.check()

    async def _close(self) -> None:
        task, self._task = self._task, None
        await lifecycle.cancel(task)
