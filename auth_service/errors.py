"""Domain errors of the server. `servicer.py` turns them into gRPC statuses.

ServiceError
├── InvalidArgumentError      bad input (never echoes the input back)
├── NotFoundError             no such user
├── AlreadyExistsError        username taken by an active user
├── UnauthenticatedError      missing / unknown bearer token
├── PermissionDeniedError     known caller without the needed scope
├── ResourceExhaustedError    a limit was hit (concurrency, rate, size)
├── DeadlineExceededError     the caller's deadline ran out
└── UnavailableError          the database cannot be reached right now
"""

from __future__ import annotations


class ServiceError(Exception):
    """Base of all errors the server answers on purpose."""


class InvalidArgumentError(ServiceError):
    pass


class NotFoundError(ServiceError):
    pass


class AlreadyExistsError(ServiceError):
    pass


class UnauthenticatedError(ServiceError):
    pass


class PermissionDeniedError(ServiceError):
    pass


class ResourceExhaustedError(ServiceError):
    pass


class RateLimitedError(ResourceExhaustedError):
    """A caller over its own rate limit: always the caller's doing."""


class DeadlineExceededError(ServiceError):
    pass


class UnavailableError(ServiceError):
    pass
