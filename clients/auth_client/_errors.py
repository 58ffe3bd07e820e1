"""The exceptions `auth_client` raises, and the one function that maps gRPC errors.

    AuthClientError                  anything this library raises
    ├── UserNotFoundError            the user does not exist or is deleted (`.user_ids`)
    │   └── UserReferenceError       a row being written references such users: the ORM
    │                                integrations' refusal (`.references`: column, id)
    ├── InvalidRequestError          a malformed id (raised before any network call),
    │                                or INVALID_ARGUMENT / OUT_OF_RANGE from the server
    ├── PermissionDeniedError        PERMISSION_DENIED: this caller may not ask
    │   └── UnauthenticatedError     UNAUTHENTICATED: missing or unknown token
    └── ServiceUnavailableError      auth-service could not answer (retriable):
        │                            UNAVAILABLE, RESOURCE_EXHAUSTED, INTERNAL, ...
        ├── CircuitOpenError         the breaker is open: no call was made
        ├── DeadlineExceededError    the call's deadline ran out
        └── ReplicaLoadError         a local replica (ReplicaConfig) could not be
                                     loaded when the client opened: the brokers or
                                     a topic missing, the export refused or too slow

`ServiceUnavailableError` and its subclasses are what a fallback policy turns
into an answer. Only transport failures (UNAVAILABLE, DEADLINE_EXCEEDED,
RESOURCE_EXHAUSTED, and errors with no gRPC status) count against the circuit
breaker; answers such as NOT_FOUND, INVALID_ARGUMENT or PERMISSION_DENIED (the
server is up and replied), streams the server refused for being too many at once
(`refused_stream`), and cancellations never do.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, NoReturn

import grpc

if TYPE_CHECKING:
    import uuid
    from collections.abc import Iterable


class AuthClientError(Exception):
    """Base class of every error raised by `auth_client`.

    `code` is the gRPC status the server answered with, when there was one.
    `retriable` says whether trying again later can succeed. `refused_stream` is
    True when the server's HTTP/2 layer refused the call before handling it (too
    many calls at once on one connection): the server is up, and the call was not
    processed, so it is safe to retry and never counts against the breaker.
    """

    retriable: bool = False

    def __init__(
        self,
        message: str,
        *,
        code: grpc.StatusCode | None = None,
        refused_stream: bool = False,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.refused_stream = refused_stream


class UserNotFoundError(AuthClientError):
    """One or more users do not exist (never created, or deleted)."""

    def __init__(
        self, user_ids: Iterable[uuid.UUID], *, code: grpc.StatusCode | None = None
    ) -> None:
        self.user_ids: tuple[uuid.UUID, ...] = tuple(user_ids)
        shown = ", ".join(str(u) for u in self.user_ids[:10])
        more = f" and {len(self.user_ids) - 10} more" if len(self.user_ids) > 10 else ""
        noun = "user does" if len(self.user_ids) == 1 else "users do"
        super().__init__(f"{noun} not exist: {shown}{more}", code=code)


class UserReferenceError(UserNotFoundError):
    """Rows being written (an ORM flush or save) reference users that do not exist
    or are deleted. `references` holds each (column, user id), the column as
    "table.column"; `user_ids` the distinct ids."""

    def __init__(self, references: Iterable[tuple[str, uuid.UUID]]) -> None:
        self.references: tuple[tuple[str, uuid.UUID], ...] = tuple(references)
        self.user_ids = tuple(dict.fromkeys(user_id for _, user_id in self.references))
        shown = ", ".join(f"{column} = {user_id}" for column, user_id in self.references[:10])
        more = len(self.references) - 10
        AuthClientError.__init__(
            self,
            "no such user (never created, or deleted): "
            + shown
            + (f" and {more} more" if more > 0 else ""),
        )


class InvalidRequestError(AuthClientError):
    """The request is malformed (e.g. an id that is not a UUID)."""


class PermissionDeniedError(AuthClientError):
    """auth-service refused this caller (its token lacks the scope)."""


class UnauthenticatedError(PermissionDeniedError):
    """auth-service did not accept this caller's token (missing or unknown)."""


class ServiceUnavailableError(AuthClientError):
    """auth-service could not answer; the caller's fallback policy applies."""

    retriable = True


class CircuitOpenError(ServiceUnavailableError):
    """The circuit breaker is open: the call failed at once, without an RPC."""


class DeadlineExceededError(ServiceUnavailableError):
    """The call's deadline ran out before auth-service answered."""


class ReplicaLoadError(ServiceUnavailableError):
    """The local replica (`ReplicaConfig`) could not be loaded: the message says
    what failed (Kafka unreachable or a topic missing, ExportUserStates refused or
    slower than `load_timeout`). Raised by `AuthClient.start()` / `async with`;
    later reloads retry by themselves and never raise."""


# Statuses that mean "the server could not be reached or is overloaded": these,
# and errors with no status at all, count against the circuit breaker.
TRANSPORT_FAILURES = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    }
)

_BY_STATUS: dict[grpc.StatusCode, type[AuthClientError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidRequestError,
    grpc.StatusCode.OUT_OF_RANGE: InvalidRequestError,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDeniedError,
    grpc.StatusCode.UNAUTHENTICATED: UnauthenticatedError,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceededError,
    grpc.StatusCode.UNAVAILABLE: ServiceUnavailableError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ServiceUnavailableError,
    grpc.StatusCode.ABORTED: ServiceUnavailableError,
    grpc.StatusCode.CANCELLED: ServiceUnavailableError,
    grpc.StatusCode.INTERNAL: ServiceUnavailableError,
    grpc.StatusCode.UNKNOWN: ServiceUnavailableError,
    grpc.StatusCode.DATA_LOSS: ServiceUnavailableError,
}


# How gRPC core reports an HTTP/2 RST_STREAM with REFUSED_STREAM (error code 7).
_REFUSED_STREAM = "RST_STREAM with error code 7"


def raise_for_rpc_error(
    error: BaseException, method: str, user_ids: Iterable[uuid.UUID] = ()
) -> NoReturn:
    """Raise the `AuthClientError` for `error` (from a call of `method`), chained
    with `from error`. The one place gRPC errors become library errors.

    `asyncio.CancelledError` is re-raised unchanged.
    """
    if isinstance(error, asyncio.CancelledError):
        raise error
    if isinstance(error, grpc.RpcError):
        code = error.code() if callable(getattr(error, "code", None)) else None
        details = error.details() if callable(getattr(error, "details", None)) else None
        where = f"auth-service {method}"
        if code is grpc.StatusCode.NOT_FOUND:
            raise UserNotFoundError(user_ids, code=code) from error
        if code is grpc.StatusCode.UNAVAILABLE and _REFUSED_STREAM in (details or ""):
            raise ServiceUnavailableError(
                f"{where}: UNAVAILABLE: the server refused the stream (too many calls at"
                " once on one connection; not processed)",
                code=code,
                refused_stream=True,
            ) from error
        if isinstance(code, grpc.StatusCode):
            cls = _BY_STATUS.get(code, AuthClientError)
            raise cls(f"{where}: {code.name}: {details or 'no details'}", code=code) from error
        raise ServiceUnavailableError(f"{where}: RPC failed without a status") from error
    raise ServiceUnavailableError(
        f"auth-service {method}: {type(error).__name__}: {error}"
    ) from error


def counts_against_breaker(error: BaseException) -> bool:
    """Whether `error`, raised by a guarded call, is a transport failure."""
    if isinstance(error, asyncio.CancelledError):
        return False
    if isinstance(error, AuthClientError):
        return (
            isinstance(error, ServiceUnavailableError)
            and not error.refused_stream
            and (error.code is None or error.code in TRANSPORT_FAILURES)
        )
    return True


__all__ = [
    "AuthClientError",
    "CircuitOpenError",
    "DeadlineExceededError",
    "InvalidRequestError",
    "PermissionDeniedError",
    "ReplicaLoadError",
    "ServiceUnavailableError",
    "UnauthenticatedError",
    "UserNotFoundError",
    "UserReferenceError",
    "counts_against_breaker",
    "raise_for_rpc_error",
]
