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
server's `CallPath` (`method` or `stream`: both run the handler inside the one
`_Running` context, which holds every step around it). The request parser never raises: a body that is not a valid
message reaches the path as `MALFORMED`, one over MAX_REQUEST_BYTES as `TOO_LARGE`,
so both are answered, counted and logged like every other call.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self, TypeVar

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
        steps = _Steps(self, endpoint_of(fn), self.observe.site(service, name).begin)

        async def call(request: Req, context: Context) -> Resp:
            async with _Running(steps, request, context) as running:
                response = await fn(request, running)
                running.record.answered()
                return response

        return call

    def stream(
        self, service: str, name: str, fn: StreamHandler[Req, Resp]
    ) -> StreamMethod[Req, Resp]:
        """The server-streaming gRPC method `service/name`: `fn` (an async generator
        of responses) behind every step. The call holds its admission slot until
        the last response is sent."""
        begin = self.observe.site(service, name, grpc_type="server_stream").begin
        steps = _Steps(self, endpoint_of(fn), begin)

        async def call(request: Req, context: Context) -> AsyncIterator[Resp]:
            async with _Running(steps, request, context) as running:
                responses = fn(request, running)
                async with contextlib.aclosing(responses):
                    async for response in responses:
                        yield response
                running.record.answered()

        return call


@dataclass(frozen=True, slots=True)
class _Steps:
    """What every call of one method goes through, bound once per method."""

    path: CallPath
    endpoint: Endpoint
    begin: Callable[[Caller, Context], Record]


class _Running(Call):
    """One call inside every step: entered, it authorizes the caller, starts the
    call's record (metrics, span, log) and takes an admission slot, refusing a
    body that is no message or too large there; it is the handler's `Call`. On
    exit the slot is given back, a failure answered with its status, and the
    record ended (CANCELLED unless answered or failed)."""

    __slots__ = ("_admitted", "_refused", "_request", "_steps", "record")

    def __init__(self, steps: _Steps, request: object, context: Context) -> None:
        path = steps.path
        caller, self._refused = path.authorization.check(
            context.invocation_metadata(), steps.endpoint.scope, read=steps.endpoint.read
        )
        super().__init__(context, caller, path.default_budget_s)
        self._steps = steps
        self._request = request
        self._admitted = False
        self.record = steps.begin(caller, context)

    async def __aenter__(self) -> Self:
        try:
            self._enter()
        except Exception as exc:
            await self.__aexit__(type(exc), exc, exc.__traceback__)
            raise  # pragma: no cover - __aexit__ aborts the call
        return self

    def _enter(self) -> None:
        if self._refused is not None:
            raise self._refused
        self._steps.path.admission.enter(self.caller.name)
        self._admitted = True
        if self._request is MALFORMED:
            raise errors.InvalidArgumentError("request is not a valid message")
        if self._request is TOO_LARGE:
            raise errors.ResourceExhaustedError(
                f"request larger than {self._steps.path.max_request_bytes} bytes"
            )

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if self._admitted:
                self._admitted = False
                self._steps.path.admission.leave(self.caller.name)
            if isinstance(exc, Exception):
                await _fail(self.record, self._context, exc)
        finally:
            self.record.end()


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
