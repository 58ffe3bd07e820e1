"""grpc's synchronous channel, awaited from an event loop.

`SyncAuthClient` runs `AuthClient`'s own code (cache, coalescing, batching, breaker,
fallbacks, rollout modes, tracing) in one event-loop thread, over a channel of
grpc's *synchronous* stack: grpc.aio's process-wide poller thread does not survive
fork(), so a child forked after the parent used a grpc.aio channel cannot make a
working one of its own (measured with grpcio 1.85: its calls hang until their
deadline, or the child aborts in the epoll poller), while the synchronous stack
resets itself in the child.

`SyncChannelBridge` is the only piece that differs: the generated stub calls its
`unary_unary` as it would a `grpc.aio.Channel`'s, and each call starts the RPC with
the synchronous multicallable's `.future()`; grpc completes it on its own thread,
which hands the outcome to the event loop (`call_soon_threadsafe`). Cancelling the
awaiting task (the client closing) cancels the RPC. Errors are grpc's own
`grpc.RpcError`s, mapped by `raise_for_rpc_error` like grpc.aio's.

Server-streaming calls (a local replica's export, rare and long) are iterated with
`async for`: each next response is waited for in the loop's default executor, and
`cancel()` ends the call (which also ends a wait in progress).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from typing import Any

import grpc


def _settle(waiter: asyncio.Future[Any], call: grpc.Future[Any]) -> None:
    """In the loop: hand the finished RPC's outcome to the awaiting task."""
    if waiter.done():
        return
    try:
        error = call.exception()
    except grpc.FutureCancelledError as exc:  # cancelled by someone else (channel closed)
        error = exc
    if error is not None:
        waiter.set_exception(error)
    else:
        waiter.set_result(call.result())


def _completed(
    loop: asyncio.AbstractEventLoop, waiter: asyncio.Future[Any], call: grpc.Future[Any]
) -> None:
    """In grpc's thread: the RPC is done."""
    try:
        loop.call_soon_threadsafe(_settle, waiter, call)
    except RuntimeError:  # the loop is closed: nobody waits any more
        return


def _cancel_rpc(call: grpc.Future[Any], waiter: asyncio.Future[Any]) -> None:
    if waiter.cancelled():
        call.cancel()


class _Method:
    """One unary-unary method: calling it starts the RPC and returns an awaitable."""

    __slots__ = ("_multicallable",)

    def __init__(self, multicallable: grpc.UnaryUnaryMultiCallable[Any, Any]) -> None:
        self._multicallable = multicallable

    def __call__(
        self,
        request: Any,
        *,
        timeout: float | None = None,
        metadata: tuple[tuple[str, str], ...] | None = None,
    ) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[Any] = loop.create_future()
        call = self._multicallable.future(request, timeout=timeout, metadata=metadata)
        waiter.add_done_callback(functools.partial(_cancel_rpc, call))
        call.add_done_callback(functools.partial(_completed, loop, waiter))
        return waiter


_END = object()


class _StreamCall:
    """One server-streaming call: `async for` over its responses, `cancel()`."""

    __slots__ = ("_call",)

    def __init__(self, call: Any) -> None:
        self._call = call

    def __aiter__(self) -> _StreamCall:
        return self

    async def __anext__(self) -> Any:
        loop = asyncio.get_running_loop()
        item = await loop.run_in_executor(None, next, self._call, _END)
        if item is _END:
            raise StopAsyncIteration
        return item

    def cancel(self) -> bool:
        return bool(self._call.cancel())


class _StreamMethod:
    __slots__ = ("_multicallable",)

    def __init__(self, multicallable: grpc.UnaryStreamMultiCallable[Any, Any]) -> None:
        self._multicallable = multicallable

    def __call__(
        self,
        request: Any,
        *,
        timeout: float | None = None,
        metadata: tuple[tuple[str, str], ...] | None = None,
    ) -> _StreamCall:
        return _StreamCall(self._multicallable(request, timeout=timeout, metadata=metadata))


class SyncChannelBridge:
    """Looks like a `grpc.aio.Channel` to the generated stubs; runs their calls on
    a synchronous `grpc.Channel`, attached when the client opens (so that a client
    created before a fork and first used after it has no channel from the parent)."""

    __slots__ = ("_channel",)

    def __init__(self) -> None:
        self._channel: grpc.Channel | None = None

    def attach(self, channel: grpc.Channel) -> None:
        self._channel = channel

    def _attached(self) -> grpc.Channel:
        if self._channel is None:
            raise RuntimeError("no channel attached")
        return self._channel

    def unary_unary(
        self,
        method: str,
        request_serializer: Callable[[Any], bytes] | None = None,
        response_deserializer: Callable[[bytes], Any] | None = None,
        _registered_method: bool | None = False,
    ) -> _Method:
        return _Method(
            self._attached().unary_unary(
                method,
                request_serializer=request_serializer,
                response_deserializer=response_deserializer,
                _registered_method=_registered_method,  # type: ignore[call-arg]
            )
        )

    def unary_stream(
        self,
        method: str,
        request_serializer: Callable[[Any], bytes] | None = None,
        response_deserializer: Callable[[bytes], Any] | None = None,
        _registered_method: bool | None = False,
    ) -> _StreamMethod:
        return _StreamMethod(
            self._attached().unary_stream(
                method,
                request_serializer=request_serializer,
                response_deserializer=response_deserializer,
                _registered_method=_registered_method,  # type: ignore[call-arg]
            )
        )


__all__ = ["SyncChannelBridge"]
