"""The observing step of a call: its metrics (grpc_server_*), its SERVER span and its
log lines (api/call_log.py), begun once the caller is known and ended however the
call ends. One `Observation` per server; one `Site` per method, built at
registration; one `Record` per call.
"""

from __future__ import annotations

import time
from typing import Any

import grpc

from auth_service import tracing
from auth_service.api.call_log import CallLog, request_id
from auth_service.api.metrics import MethodMetrics, method_metrics
from auth_service.config.tokens import Caller

_CANCELLED = grpc.StatusCode.CANCELLED


class Observation:
    """What a server records of its calls: metrics when `metrics` is on, its own
    call log."""

    __slots__ = ("log", "metrics")

    def __init__(self, *, metrics: bool, log: CallLog | None = None) -> None:
        self.metrics = metrics
        self.log = log if log is not None else CallLog()

    def site(self, service: str, method: str, *, grpc_type: str = "unary") -> Site:
        # The counters exist (at 0) from registration on.
        counters = method_metrics(service, method, grpc_type)
        return Site(service, method, counters if self.metrics else None, self.log)


class Site:
    """One method of one server."""

    __slots__ = ("log", "method", "metrics", "service")

    def __init__(
        self, service: str, method: str, metrics: MethodMetrics | None, log: CallLog
    ) -> None:
        self.service = service
        self.method = method
        self.metrics = metrics
        self.log = log

    def begin(self, caller: Caller, context: grpc.aio.ServicerContext[Any, Any]) -> Record:
        if self.metrics is not None:
            self.metrics.start(caller.name)
        span = tracing.server_span(self.service, self.method, context.invocation_metadata())
        return Record(self, caller, context, span)


class Record:
    """One call being observed: `answered()` or `failed(...)`, then `end()`."""

    __slots__ = ("_context", "_site", "_span", "_started", "caller", "code", "message", "rid")

    def __init__(
        self,
        site: Site,
        caller: Caller,
        context: grpc.aio.ServicerContext[Any, Any],
        span: tracing.ServerSpan,
    ) -> None:
        self._site = site
        self._context = context
        self._span = span
        self._started = time.perf_counter()
        self.caller = caller
        self.code = _CANCELLED  # unless answered or failed
        self.message = ""
        self.rid: str | None = None

    def answered(self) -> None:
        self.code = grpc.StatusCode.OK

    def failed(self, exc: Exception, code: grpc.StatusCode, message: str, rid: str) -> None:
        self.code, self.message, self.rid = code, message, rid
        site = self._site
        site.log.failure(
            site.service, site.method, exc, caller=self.caller, code=code, message=message, rid=rid
        )

    def end(self) -> None:
        site, code, caller = self._site, self.code, self.caller
        if site.metrics is not None:
            site.metrics.done(caller.name, code, time.perf_counter() - self._started)
        self._span.end(caller.name, code.value[0], self.message)
        if site.log.debug_enabled():
            site.log.call(
                site.service,
                site.method,
                caller,
                code,
                started=self._started,
                rid=self.rid or request_id(self._context),
            )


__all__ = ["Observation", "Record", "Site"]
