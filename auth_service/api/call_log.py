"""The log lines of API calls: one per failed call (outages and overload
rate-limited, an unauthenticated caller's mistakes at DEBUG) and, at DEBUG, one per
call. Names, codes and request ids only: never tokens, bodies or user data. The
logger is `auth_service.rpc`, as operators filter on it."""

from __future__ import annotations

import logging
import re
import time
import uuid
from typing import Any

import grpc

from auth_service.config.tokens import Caller
from auth_service.notices import RepeatingNotice

log = logging.getLogger("auth_service.rpc")

_DENIED = frozenset(
    {
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    }
)
# Outages and overload repeat on every call: said at once, then at most every 10 s
# with a count, so a dead database or a flood cannot flood the log.
_REPEATING = (
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
)


_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")


def request_id(context: grpc.aio.ServicerContext[Any, Any]) -> str:
    """The caller's `x-request-id` when it is a sane token, else a new one."""
    for key, value in context.invocation_metadata() or ():
        if key == "x-request-id" and isinstance(value, str) and _REQUEST_ID.fullmatch(value):
            return value
    return uuid.uuid4().hex[:16]


class CallLog:
    """The call log of one server (its own rate limits on repeated notices)."""

    __slots__ = ("_notices",)

    def __init__(self, interval: float = 10.0) -> None:
        self._notices = {code: RepeatingNotice(log, interval=interval) for code in _REPEATING}

    @staticmethod
    def debug_enabled() -> bool:
        return log.isEnabledFor(logging.DEBUG)

    def failure(
        self,
        service: str,
        method: str,
        exc: Exception,
        *,
        caller: Caller,
        code: grpc.StatusCode,
        message: str,
        rid: str,
    ) -> None:
        """The log line of a call that did not succeed. Names the caller and the
        request id: never tokens, request bodies or user data (messages never echo
        input). An unauthenticated caller's mistakes are DEBUG: strangers must not
        be able to fill the log."""
        extra = {"caller": caller.name, "request_id": rid, "method": method}
        notice = self._notices.get(code)
        if code is grpc.StatusCode.INTERNAL:
            log.error("%s failed (request id %s)", method, rid, exc_info=exc, extra=extra)
        elif notice is not None:
            notice.notice(
                "%s %s: %s (caller %s, request id %s)",
                service,
                code.name,
                message,
                caller.name,
                rid,
                **extra,
            )
        elif code in _DENIED and log.isEnabledFor(logging.DEBUG):
            log.debug("%s denied: %s (caller %s)", method, message, caller.name, extra=extra)

    @staticmethod
    def call(
        service: str,
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
                "service": service,
                "method": method,
                "code": code.name,
                "duration_ms": round(ms, 3),
            },
        )


__all__ = ["CallLog", "log", "request_id"]
