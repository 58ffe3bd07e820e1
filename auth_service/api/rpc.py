"""The per-call path of a server, composed once per server (`CallPath`) from small
steps, each its own unit:

    authorization   api/authorization.py   who calls; may they call this method
    observation     api/observation.py     metrics, the SERVER span, the call log
    admission       api/admission.py       concurrency and rate limits
    request body    here                   a body that is not a message, or too large
    the handler     api/servicers.py       proto <-> domain, with a `Call`
      budget        Call.budget()          the deadline, capped by the statement timeout
      database      store/pool.connection  refused at once while the database cannot answer
    status mapping  api/statuses.py        domain errors -> gRPC codes, in one place

Servicer methods are written `(self, request, call) -> response` (or, for a
server-streaming method, an async generator of responses) and marked with
`@handler(scope, read=...)`; `parsing.add_service` registers each one through its
server's `CallPath` (`method` or `stream`). The request parser never raises: a body that is not a valid
message reaches the path as `MALFORMED`, one over MAX_REQUEST_BYTES as `TOO_LARGE`,
so both are answered, counted and logged like every other call.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc

from auth_service import errors
from auth_service.api.admission import Admission
from auth_service.api.authorization import Authorization
from auth_service.api.call_log import request_id
from auth_service.api.observation import Observation, Record
from auth_service.api.statuses import status_for
from auth_service.config.tokens import Caller
from auth_service.store.pool import Budget

Req = TypeVar("Req")
Resp = TypeVar("Resp")
Context = grpc.aio.ServicerContext[Any, Any]
Handler = Callable[[Req, "Call"], Awaitable[Resp]]
Method = Callable[[Req, Context], Awaitable[Resp]]
StreamHandler = Callable[[Req, "Call"], AsyncGenerator[Resp, None]]
StreamMethod = Callable[[Req, Context], AsyncIterator[Resp]]

_ENDPOINT = "_auth_endpoint"


class _Marker:
    __slots__ = ("_name",)

    def __init__(self, name: str) -> None:
        self._name = name

    def __repr__(self) -> str:
        return self._name


MALFORMED: Any = _Marker("MALFORMED")
TOO_LARGE: Any = _Marker("TOO_LARGE")


@dataclass(frozen=True, slots=True)
class Endpoint:
    """What a method needs of its callers."""

    scope: str
    read: bool


def handler(scope: str, *, read: bool) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Mark a servicer method `(self, request, call) -> response` with the scope it
    needs (`read`: anonymous callers are let in where reads need no token)."""

    def mark(fn: Callable[..., Any]) -> Callable[..., Any]:
        setattr(fn, _ENDPOINT, Endpoint(scope, read))
        return fn

    return mark


def endpoint_of(fn: object) -> Endpoint:
    endpoint = getattr(fn, _ENDPOINT, None)
    if not isinstance(endpoint, Endpoint):
        raise TypeError(f"{fn!r} is not marked with @handler(scope, read=...)")
    return endpoint


class Call:
    """Per-request facts handed to a handler: who calls, and the time budget."""

    __slots__ = ("_context", "caller", "default_budget_s")

    def __init__(self, context: Context, caller: Caller, default_budget_s: float) -> None:
        self._context = context
        self.caller = caller
        self.default_budget_s = default_budget_s

    def budget(self) -> Budget:
        """Time for the next database step: the caller's remaining deadline, capped by
        the statement timeout."""
        remaining = self._context.time_remaining()
        if remaining is None or remaining >= self.default_budget_s:
            return Budget(self.default_budget_s, from_deadline=False)
        if remaining <= 0.001:
            raise errors.DeadlineExceededError("deadline exceeded")
        return Budget(remaining, from_deadline=True)


class CallPath:
    """The steps every call of one server goes through, in order."""

    __slots__ = ("admission", "authorization", "default_budget_s", "max_request_bytes", "observe")

    def __init__(
        self,
        authorization: Authorization,
        admission: Admission,
        observe: Observation,
        *,
        default_budget_s: float,
        max_request_bytes: int,
    ) -> None:
        self.authorization = authorization
        self.admission = admission
        self.observe = observe
        self.default_budget_s = default_budget_s
        self.max_request_bytes = max_request_bytes

    def method(self, service: str, name: str, fn: Handler[Req, Resp]) -> Method[Req, Resp]:
        """The gRPC method `service/name`: `fn` behind every step."""
        endpoint = endpoint_of(fn)
        authorize = self.authorization.check
        begin = self.observe.site(service, name).begin

        async def call(request: Req, context: Context) -> Resp:
            caller, refused = authorize(
                context.invocation_metadata(), endpoint.scope, read=endpoint.read
            )
            record = begin(caller, context)
            try:
                if refused is not None:
                    raise refused  # noqa: TRY301 - answered and counted below like the rest
                with self._admitted(request, caller):
                    response = await fn(request, Call(context, caller, self.default_budget_s))
                record.answered()
                return response
            except Exception as exc:
                await _fail(record, context, exc)
                raise  # pragma: no cover - abort() always raises
            finally:
                record.end()  # CANCELLED unless answered or failed above

        return call

    def stream(
        self, service: str, name: str, fn: StreamHandler[Req, Resp]
    ) -> StreamMethod[Req, Resp]:
        """The server-streaming gRPC method `service/name`: `fn` (an async generator
        of responses) behind every step. The call holds its admission slot until
        the last response is sent."""
        endpoint = endpoint_of(fn)
        authorize = self.authorization.check
        begin = self.observe.site(service, name, grpc_type="server_stream").begin

        async def call(request: Req, context: Context) -> AsyncIterator[Resp]:
            caller, refused = authorize(
                context.invocation_metadata(), endpoint.scope, read=endpoint.read
            )
            record = begin(caller, context)
            try:
                if refused is not None:
                    raise refused  # noqa: TRY301 - answered and counted below like the rest
                with self._admitted(request, caller):
                    responses = fn(request, Call(context, caller, self.default_budget_s))
                    async with contextlib.aclosing(responses):
                        async for response in responses:
                            yield response
                record.answered()
            except Exception as exc:
                await _fail(record, context, exc)
                raise  # pragma: no cover - abort() always raises
            finally:
                record.end()  # CANCELLED unless answered or failed above

        return call

    @contextlib.contextmanager
    def _admitted(self, request: object, caller: Caller) -> Iterator[None]:
        """The call's admission slot while the handler runs; a body that is no
        message, or too large, refused there."""
        admission = self.admission
        admission.enter(caller.name)
        try:
            if request is MALFORMED:
                raise errors.InvalidArgumentError("request is not a valid message")
            if request is TOO_LARGE:
                raise errors.ResourceExhaustedError(
                    f"request larger than {self.max_request_bytes} bytes"
                )
            yield
        finally:
            admission.leave(caller.name)


async def _fail(record: Record, context: Context, exc: Exception) -> None:
    """Answer a failed call: its status (domain error -> gRPC code), recorded and
    logged; INTERNAL with a request id only."""
    code, message = status_for(exc)
    rid = request_id(context)
    if code is grpc.StatusCode.INTERNAL:
        message = f"internal error (request id {rid})"
    record.failed(exc, code, message, rid)
    context.set_trailing_metadata((("x-request-id", rid),))
    await context.abort(code, message)


__all__ = [
    "MALFORMED",
    "TOO_LARGE",
    "Call",
    "CallPath",
    "Endpoint",
    "StreamHandler",
    "endpoint_of",
    "handler",
    "request_id",
    "status_for",
]
