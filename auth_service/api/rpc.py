"""The wrapper every RPC handler goes through: caller check, admission limits,
deadline budget, and the one mapping from domain errors to gRPC status codes.

Services are registered with `add_service`, whose request parser never raises: a
body that is not a valid message reaches the wrapper as `MALFORMED` and is
answered INVALID_ARGUMENT after the caller check (grpcio's own parser would answer
UNKNOWN and echo protobuf internals).
"""

from __future__ import annotations

import functools
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import grpc
from google.protobuf import message_factory

from auth_service import errors
from auth_service.api.callers import ANONYMOUS, MissingScopeError, TokenRegistry, bearer_token
from auth_service.api.limits import Limits
from auth_service.api.metrics import MethodMetrics, method_metrics
from auth_service.config.tokens import Caller
from auth_service.store.pool import Budget

if TYPE_CHECKING:
    from google.protobuf.descriptor import ServiceDescriptor

log = logging.getLogger("auth_service.rpc")

_STATUS: dict[type[errors.ServiceError], grpc.StatusCode] = {
    errors.InvalidArgumentError: grpc.StatusCode.INVALID_ARGUMENT,
    errors.NotFoundError: grpc.StatusCode.NOT_FOUND,
    errors.AlreadyExistsError: grpc.StatusCode.ALREADY_EXISTS,
    errors.UnauthenticatedError: grpc.StatusCode.UNAUTHENTICATED,
    errors.PermissionDeniedError: grpc.StatusCode.PERMISSION_DENIED,
    errors.ResourceExhaustedError: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.DeadlineExceededError: grpc.StatusCode.DEADLINE_EXCEEDED,
    errors.UnavailableError: grpc.StatusCode.UNAVAILABLE,
}
_DENIED = frozenset(
    {
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    }
)
_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")


def status_for(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """The status code and caller-safe message for an exception raised by a handler."""
    if isinstance(exc, errors.ServiceError):
        for cls in type(exc).__mro__:
            code = _STATUS.get(cls)
            if code is not None:
                return code, str(exc)
    return grpc.StatusCode.INTERNAL, "internal error"


class Access:
    """Who may call which service. Shared by all servicers of one server."""

    def __init__(
        self,
        tokens: TokenRegistry,
        *,
        allow_unauthenticated_reads: bool,
        limits: Limits | None = None,
        metrics: bool = False,
    ) -> None:
        # Replaced as a whole when the token file is reloaded (one attribute store).
        self.tokens = tokens
        self.allow_unauthenticated_reads = allow_unauthenticated_reads
        self.limits = limits if limits is not None else Limits()
        # Record grpc_server_* metrics (auth_service.metrics) for every call.
        self.metrics = metrics

    def authorize(
        self, context: grpc.aio.ServicerContext[Any, Any], scope: str, read: bool
    ) -> Caller:
        token = bearer_token(context.invocation_metadata())
        if token is None:
            if read and self.allow_unauthenticated_reads:
                return ANONYMOUS
            raise errors.UnauthenticatedError("missing or malformed bearer token")
        caller = self.tokens.lookup(token)
        if caller is None:
            if read and self.allow_unauthenticated_reads:
                return ANONYMOUS
            raise errors.UnauthenticatedError("unknown bearer token")
        if not caller.has(scope):
            raise MissingScopeError(caller, scope)
        return caller


def request_id(context: grpc.aio.ServicerContext[Any, Any]) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == "x-request-id" and isinstance(value, str) and _REQUEST_ID.fullmatch(value):
            return value
    return uuid.uuid4().hex[:16]


class _Malformed:
    __slots__ = ()

    def __repr__(self) -> str:
        return "MALFORMED"


MALFORMED: Any = _Malformed()


def _lenient(parse: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    def deserialize(data: bytes) -> Any:
        try:
            return parse(data)
        except Exception:  # DecodeError, bad UTF-8, nesting too deep, ...
            return MALFORMED

    return deserialize


def add_service(server: grpc.aio.Server, service: ServiceDescriptor, servicer: object) -> None:
    """Register a servicer of unary methods (like the generated `add_*_to_server`),
    with request parsing that hands malformed bodies to the handler as MALFORMED."""
    handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}
    for method in service.methods:
        assert not method.client_streaming, method.full_name
        assert not method.server_streaming, method.full_name
        request_cls = message_factory.GetMessageClass(method.input_type)
        response_cls = message_factory.GetMessageClass(method.output_type)
        handlers[method.name] = grpc.unary_unary_rpc_method_handler(
            getattr(servicer, method.name),
            request_deserializer=_lenient(request_cls.FromString),
            response_serializer=response_cls.SerializeToString,
        )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(service.full_name, handlers),)
    )
    # Names for metrics and logs; the started counters exist (at 0) from the start.
    _SERVICE_NAMES[type(servicer)] = service.full_name
    for method in service.methods:
        method_metrics(service.full_name, method.name)
    # As the generated code does: lets gRPC core match these methods without Python.
    server.add_registered_method_handlers(service.full_name, handlers)  # type: ignore[attr-defined]


class HasAccess(Protocol):
    access: Access
    default_budget_s: float


S = TypeVar("S", bound=HasAccess)
Req = TypeVar("Req")
Resp = TypeVar("Resp")


class Call:
    """Per-request facts handed to a handler: who calls, and the time budget."""

    __slots__ = ("_context", "caller", "default_budget_s")

    def __init__(
        self, context: grpc.aio.ServicerContext[Any, Any], caller: Caller, default_budget_s: float
    ) -> None:
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


def handler(
    scope: str, *, read: bool
) -> Callable[
    [Callable[[S, Req, Call], Awaitable[Resp]]],
    Callable[[S, Req, grpc.aio.ServicerContext[Any, Any]], Awaitable[Resp]],
]:
    """Wrap a servicer method `(self, request, call) -> response`."""

    def wrap(
        fn: Callable[[S, Req, Call], Awaitable[Resp]],
    ) -> Callable[[S, Req, grpc.aio.ServicerContext[Any, Any]], Awaitable[Resp]]:
        method = fn.__name__
        sites: dict[type, MethodMetrics] = {}  # per servicer class (= gRPC service)

        @functools.wraps(fn)
        async def wrapper(
            self: S, request: Req, context: grpc.aio.ServicerContext[Any, Any]
        ) -> Resp:
            started = time.perf_counter()
            caller = ANONYMOUS
            code = grpc.StatusCode.CANCELLED  # unless the call ends below
            rid: str | None = None
            access = self.access
            site: MethodMetrics | None = None
            if access.metrics:
                site = sites.get(type(self))
                if site is None:
                    site = sites[type(self)] = method_metrics(_service_name(self), method)
                site.start()
            try:
                caller = access.authorize(context, scope, read)
                limits = access.limits
                limits.admit(caller.name)
                try:
                    if request is MALFORMED:
                        raise errors.InvalidArgumentError("request is not a valid message")
                    response = await fn(self, request, Call(context, caller, self.default_budget_s))
                    code = grpc.StatusCode.OK
                    return response
                finally:
                    limits.release(caller.name)
            except Exception as exc:
                if isinstance(exc, MissingScopeError):
                    caller = exc.caller  # known, just not allowed: name it
                code, message = status_for(exc)
                rid = request_id(context)
                # Logs carry the caller's name and the request id: never tokens,
                # request bodies or user data (messages never echo input).
                extra = {"caller": caller.name, "request_id": rid, "method": method}
                if code is grpc.StatusCode.INTERNAL:
                    log.exception("%s failed (request id %s)", method, rid, extra=extra)
                    message = f"internal error (request id {rid})"
                elif code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                    log.warning("%s: %s (request id %s)", method, message, rid, extra=extra)
                elif code in _DENIED and log.isEnabledFor(logging.DEBUG):
                    # DEBUG: strangers and floods must not be able to flood the logs.
                    log.debug(
                        "%s denied: %s (caller %s, peer %s)",
                        method,
                        message,
                        caller.name,
                        context.peer(),
                        extra=extra,
                    )
                context.set_trailing_metadata((("x-request-id", rid),))
                await context.abort(code, message)
                raise  # pragma: no cover - abort() always raises
            finally:
                if site is not None:
                    site.done(caller.name, code, time.perf_counter() - started)
                if log.isEnabledFor(logging.DEBUG):
                    _log_call(
                        self, method, caller, code, started=started, rid=rid or request_id(context)
                    )

        return wrapper

    return wrap


_SERVICE_NAMES: dict[type, str] = {}


def _service_name(servicer: object) -> str:
    """The gRPC service a servicer was registered as (by `add_service`)."""
    return _SERVICE_NAMES.get(type(servicer), type(servicer).__name__)


def _log_call(
    servicer: object,
    method: str,
    caller: Caller,
    code: grpc.StatusCode,
    *,
    started: float,
    rid: str,
) -> None:
    """The one DEBUG line per call: names and outcome only, never request data."""
    ms = (time.perf_counter() - started) * 1000
    log.debug(
        "%s %s in %.2f ms (caller %s, request id %s)",
        method,
        code.name,
        ms,
        caller.name,
        rid,
        extra={
            "request_id": rid,
            "caller": caller.name,
            "service": _service_name(servicer),
            "method": method,
            "code": code.name,
            "duration_ms": round(ms, 3),
        },
    )


__all__ = ["MALFORMED", "Access", "Call", "add_service", "handler", "status_for"]
