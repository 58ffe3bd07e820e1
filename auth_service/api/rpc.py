"""The wrapper every RPC handler goes through: caller check, admission limits,
deadline budget, metrics, and the one mapping from domain errors to gRPC status
codes.

Services are registered with `parsing.add_service`, whose request parser never
raises: a body that is not a valid message reaches the wrapper as `MALFORMED`
(answered INVALID_ARGUMENT after the caller check), one over MAX_REQUEST_BYTES as
`TOO_LARGE` (RESOURCE_EXHAUSTED), so both are counted like every other call.
"""

from __future__ import annotations

import functools
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

import grpc

from auth_service import errors, tracing
from auth_service.api.call_log import log, log_call, log_failure
from auth_service.api.callers import ANONYMOUS, MissingScopeError, TokenRegistry, bearer_token
from auth_service.api.limits import Limits
from auth_service.api.metrics import MethodMetrics, method_metrics
from auth_service.api.parsing import MALFORMED, TOO_LARGE, max_request_bytes, service_name
from auth_service.config.tokens import Caller
from auth_service.store.pool import Budget
from auth_service.store.status import DatabaseStatus

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
        database: DatabaseStatus | None = None,
    ) -> None:
        # Replaced as a whole when the token file is reloaded (one attribute store).
        self.tokens = tokens
        self.allow_unauthenticated_reads = allow_unauthenticated_reads
        self.limits = limits if limits is not None else Limits()
        # Record grpc_server_* metrics (auth_service.metrics) for every call.
        self.metrics = metrics
        self.database = database if database is not None else DatabaseStatus()

    def admit(self, caller: str) -> None:
        """Count the call in, or refuse it at once: UNAVAILABLE when the database
        cannot answer it (schema not migrated, queries stalled), RESOURCE_EXHAUSTED
        when a limit is hit — unless the calls holding the slots are waiting on a
        database that stopped answering: that is not the caller's doing."""
        database = self.database
        refusal = database.refusal()
        if refusal is not None:
            raise errors.UnavailableError(refusal)
        try:
            self.limits.admit(caller)
        except errors.ResourceExhaustedError:
            if database.suspect():
                raise errors.UnavailableError(
                    "the database is slow to answer; calls are waiting on it"
                ) from None
            raise

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
            # Even where reads need no token (dev), a token nobody issued is refused:
            # a wrong token must fail locally as it would in production.
            raise errors.UnauthenticatedError("unknown bearer token")
        if not caller.has(scope):
            raise MissingScopeError(caller, scope)
        return caller


def request_id(context: grpc.aio.ServicerContext[Any, Any]) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == "x-request-id" and isinstance(value, str) and _REQUEST_ID.fullmatch(value):
            return value
    return uuid.uuid4().hex[:16]


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
            code = grpc.StatusCode.CANCELLED  # unless the call ends below
            rid: str | None = None
            message = ""
            access = self.access
            refused: errors.ServiceError | None = None
            try:
                caller = access.authorize(context, scope, read)
            except MissingScopeError as exc:
                caller, refused = exc.caller, exc  # known, just not allowed: name it
            except errors.ServiceError as exc:
                caller, refused = ANONYMOUS, exc
            site: MethodMetrics | None = None
            if access.metrics:
                site = sites.get(type(self))
                if site is None:
                    site = sites[type(self)] = method_metrics(service_name(self), method)
                site.start(caller.name)
            tracer = tracing.TRACER
            if tracer is not None:  # the SERVER span, current until the call ends
                span, token = tracing.start_server_span(
                    tracer, service_name(self), method, context.invocation_metadata()
                )
            try:
                if refused is not None:
                    raise refused  # noqa: TRY301 - answered and counted below like the rest
                access.admit(caller.name)
                limits = access.limits
                try:
                    if request is MALFORMED:
                        raise errors.InvalidArgumentError("request is not a valid message")
                    if request is TOO_LARGE:
                        raise errors.ResourceExhaustedError(
                            f"request larger than {max_request_bytes(self)} bytes"
                        )
                    response = await fn(self, request, Call(context, caller, self.default_budget_s))
                    code = grpc.StatusCode.OK
                    return response
                finally:
                    limits.release(caller.name)
            except Exception as exc:
                code, message = status_for(exc)
                rid = request_id(context)
                if code is grpc.StatusCode.INTERNAL:
                    message = f"internal error (request id {rid})"
                log_failure(self, method, exc, caller=caller, code=code, message=message, rid=rid)
                context.set_trailing_metadata((("x-request-id", rid),))
                await context.abort(code, message)
                raise  # pragma: no cover - abort() always raises
            finally:
                if site is not None:
                    site.done(caller.name, code, time.perf_counter() - started)
                if tracer is not None:
                    tracing.end_server_span(span, token, caller.name, code.value[0], message)
                if log.isEnabledFor(logging.DEBUG):
                    log_call(
                        self, method, caller, code, started=started, rid=rid or request_id(context)
                    )

        return wrapper

    return wrap


__all__ = ["Access", "Call", "handler", "status_for"]
