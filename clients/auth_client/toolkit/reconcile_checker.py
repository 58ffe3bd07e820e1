"""How `auth-toolkit reconcile` asks auth-service about ids, and how fast.

Reconciliation must tell a deleted user from an id that never existed, so it uses
`AuthClient.user_states` (BatchUserExists, no cache, through the client's circuit
breaker) and retries while auth-service is unavailable.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import TYPE_CHECKING, Protocol, Self

from auth_client import (
    AuthClient,
    AuthClientError,
    BreakerConfig,
    ServiceUnavailableError,
    TLSConfig,
)
from auth_client import UserState as ClientState
from auth_client.backoff import backoff_delay
from auth_client.toolkit.reconcile_model import IdState, ReconcileError

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence
    from types import TracebackType

_MAX_BACKOFF_S = 30.0
_STATES = {
    ClientState.ACTIVE: IdState.ACTIVE,
    ClientState.DELETED: IdState.DELETED,
    ClientState.NOT_FOUND: IdState.NOT_FOUND,
}


class UserStates(Protocol):
    async def states(self, ids: Sequence[str]) -> list[IdState]:
        """The state of each id, in order (ids are canonical UUID text)."""
        ...


class GrpcUserStates:
    """BatchUserExists through `auth_client.AuthClient`. Retries while auth-service is
    unavailable (incl. an open breaker) with exponential backoff; anything else is
    fatal."""

    def __init__(
        self,
        target: str,
        *,
        token: str | None = None,
        tls: TLSConfig | None = None,
        timeout: float = 10.0,
        retries: int = 5,
        backoff: float = 0.5,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._target = target
        self._token = token
        self._tls = tls
        self._timeout = timeout
        self._retries = retries
        self._backoff = backoff
        self._sleep = sleep
        self._client: AuthClient | None = None

    def __repr__(self) -> str:  # never show the token
        return f"GrpcUserStates({self._target!r})"

    async def __aenter__(self) -> Self:
        # The breaker's reset timeout stays below our first backoff step, so a retry
        # after an outage is the half-open probe rather than another fast failure.
        breaker = BreakerConfig(fail_max=3, reset_timeout=min(self._backoff, 1.0))
        self._client = AuthClient(
            self._target,
            token=self._token,
            tls=self._tls,
            timeout=self._timeout,
            breaker=breaker,
            name="reconcile",
        )
        await self._client.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    async def states(self, ids: Sequence[str]) -> list[IdState]:
        if self._client is None:
            raise RuntimeError("use `async with GrpcUserStates(...)`")
        keys = [uuid.UUID(i) for i in ids]
        attempt = 0
        while True:
            try:
                answers = await self._client.user_states(keys)
                break
            except ServiceUnavailableError as exc:
                if attempt < self._retries:
                    await self._sleep(backoff_delay(attempt, self._backoff, _MAX_BACKOFF_S))
                    attempt += 1
                    continue
                raise ReconcileError(f"BatchUserExists at {self._target} failed: {exc}") from exc
            except AuthClientError as exc:
                raise ReconcileError(f"BatchUserExists at {self._target} failed: {exc}") from exc
        return [_STATES[answers[key]] for key in keys]


class Pacer:
    """At most `rate` batches per second (0 = no limit), spaced evenly."""

    def __init__(
        self,
        rate: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if rate < 0:
            raise ValueError("rate must not be negative")
        self._interval = 1.0 / rate if rate > 0 else 0.0
        self._clock = clock
        self._sleep = sleep
        self._next: float | None = None

    async def wait(self) -> None:
        """Return when the next batch may start."""
        if self._interval == 0:
            return
        now = self._clock()
        if self._next is not None and now < self._next:
            await self._sleep(self._next - now)
            now = self._next
        self._next = now + self._interval
