"""How `auth-service reconcile` asks auth-service about ids, and how fast.

`AuthClient.users_exist` answers only "exists or not"; reconciliation must tell a
deleted user from an id that never existed, so this calls `BatchUserExists` with
the stub generated in `auth_client._proto` and reads each result's `state`.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Protocol, Self

import grpc

from auth_client._proto.auth.v1 import auth_pb2, auth_pb2_grpc
from auth_service.reconcile_model import IdState, ReconcileError

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence
    from types import TracebackType

MAX_IDS_PER_CALL = 1000  # the server's BatchUserExists limit
_STATES = {
    auth_pb2.USER_STATE_ACTIVE: IdState.ACTIVE,
    auth_pb2.USER_STATE_DELETED: IdState.DELETED,
    auth_pb2.USER_STATE_NOT_FOUND: IdState.NOT_FOUND,
}
_RETRIABLE = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    }
)


class UserStates(Protocol):
    async def states(self, ids: Sequence[str]) -> list[IdState]:
        """The state of each id, in order (ids are canonical UUID text)."""
        ...


class GrpcUserStates:
    """BatchUserExists over a channel of its own. Retries UNAVAILABLE, DEADLINE_EXCEEDED
    and RESOURCE_EXHAUSTED with exponential backoff; anything else is fatal."""

    def __init__(
        self,
        target: str,
        *,
        token: str | None = None,
        timeout: float = 10.0,
        retries: int = 5,
        backoff: float = 0.5,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._target = target
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self._timeout = timeout
        self._retries = retries
        self._backoff = backoff
        self._sleep = sleep
        self._channel: grpc.aio.Channel | None = None
        self._stub: auth_pb2_grpc.AuthServiceAsyncStub | None = None

    def __repr__(self) -> str:  # never show the token
        return f"GrpcUserStates({self._target!r})"

    async def __aenter__(self) -> Self:
        self._channel = grpc.aio.insecure_channel(self._target)
        self._stub = auth_pb2_grpc.AuthServiceStub(self._channel)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        channel, self._channel, self._stub = self._channel, None, None
        if channel is not None:
            await channel.close(None)

    async def states(self, ids: Sequence[str]) -> list[IdState]:
        if self._stub is None:
            raise RuntimeError("use `async with GrpcUserStates(...)`")
        request = auth_pb2.BatchUserExistsRequest(user_ids=list(ids))
        attempt = 0
        while True:
            try:
                reply = await self._stub.BatchUserExists(
                    request, metadata=self._metadata, timeout=self._timeout
                )
                break
            except grpc.aio.AioRpcError as exc:
                code = exc.code()
                if code in _RETRIABLE and attempt < self._retries:
                    await self._sleep(self._backoff * 2**attempt)
                    attempt += 1
                    continue
                raise ReconcileError(
                    f"BatchUserExists at {self._target} failed: {code.name}: {exc.details()}"
                ) from exc
        if len(reply.results) != len(ids):
            raise ReconcileError("BatchUserExists answered a different number of ids")
        try:
            return [_STATES[result.state] for result in reply.results]
        except KeyError as exc:
            raise ReconcileError(f"BatchUserExists answered an unknown state {exc}") from exc


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
