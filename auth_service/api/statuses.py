"""The one mapping from domain errors (`auth_service.errors`) to gRPC status codes.

Anything that is not a `ServiceError` is a bug: INTERNAL, with a message that says
nothing about it (the log has the traceback, under the call's request id).
"""

from __future__ import annotations

import grpc

from auth_service import errors

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


def status_for(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """The status code and caller-safe message for an exception raised by a handler."""
    if isinstance(exc, errors.ServiceError):
        for cls in type(exc).__mro__:
            code = _STATUS.get(cls)
            if code is not None:
                return code, str(exc)
    return grpc.StatusCode.INTERNAL, "internal error"


__all__ = ["status_for"]
