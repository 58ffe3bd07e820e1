"""The steps of a call (api/rpc.py's `CallPath`), each as a unit: authorization,
admission, the deadline budget, status mapping, and the path that composes them.
Pure units: a stand-in for the gRPC servicer context; the real server is covered
by the API tests."""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from auth_service import errors
from auth_service.api.admission import Admission
from auth_service.api.authorization import Authorization
from auth_service.api.callers import ANONYMOUS, TokenRegistry
from auth_service.api.limits import Limits
from auth_service.api.observation import Observation
from auth_service.api.rpc import MALFORMED, TOO_LARGE, Call, CallPath, handler
from auth_service.api.statuses import status_for
from auth_service.config.tokens import Caller
from auth_service.store.status import DatabaseStatus

READ, ADMIN = "users:read", "users:admin"
READER = Caller("messaging", frozenset({READ}))
TOKENS = TokenRegistry([("reader-token-0123456789", READER)])


class Aborted(Exception):
    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(code, message)
        self.code, self.message = code, message


class Context:
    """What the call path asks of grpc.aio's servicer context."""

    def __init__(self, *metadata: tuple[str, str], remaining: float | None = None) -> None:
        self.metadata = metadata
        self.remaining = remaining
        self.trailing: tuple[tuple[str, str], ...] = ()

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self.metadata

    def time_remaining(self) -> float | None:
        return self.remaining

    def set_trailing_metadata(self, metadata: tuple[tuple[str, str], ...]) -> None:
        self.trailing = metadata

    async def abort(self, code: grpc.StatusCode, message: str) -> None:
        raise Aborted(code, message)


def bearer(token: str) -> tuple[str, str]:
    return ("authorization", f"Bearer {token}")


# -- authorization -----------------------------------------------------------------


def test_authorization_names_the_caller_and_refuses_by_scope() -> None:
    auth = Authorization(TOKENS, allow_unauthenticated_reads=False)
    metadata = [bearer("reader-token-0123456789")]
    assert auth.check(metadata, READ, read=True) == (READER, None)
    caller, refused = auth.check(metadata, ADMIN, read=False)
    assert caller == READER  # refused, and still named in logs and metrics
    assert isinstance(refused, errors.PermissionDeniedError)
    assert ADMIN in str(refused)


def test_authorization_refuses_missing_and_unknown_tokens() -> None:
    strict = Authorization(TOKENS, allow_unauthenticated_reads=False)
    caller, refused = strict.check([], READ, read=True)
    assert caller == ANONYMOUS
    assert isinstance(refused, errors.UnauthenticatedError)

    dev = Authorization(TOKENS, allow_unauthenticated_reads=True)
    assert dev.check([], READ, read=True) == (ANONYMOUS, None)
    assert isinstance(dev.check([], ADMIN, read=False)[1], errors.UnauthenticatedError)
    # a token nobody issued fails even where reads need none
    _, refused = dev.check([bearer("nobody-issued-this-token")], READ, read=True)
    assert isinstance(refused, errors.UnauthenticatedError)


# -- admission ---------------------------------------------------------------------


def test_admission_refuses_over_the_limit_and_blames_a_silent_database() -> None:
    now = [100.0]
    database = DatabaseStatus(stall_s=0.5, clock=lambda: now[0])
    admission = Admission(Limits(max_in_flight=1), database)
    admission.enter("messaging")
    with pytest.raises(errors.ResourceExhaustedError):
        admission.enter("content")  # the caller's doing: RESOURCE_EXHAUSTED

    database.begin()  # a query waits, unanswered for a tenth of the stall timeout
    now[0] += 0.06
    with pytest.raises(errors.UnavailableError):
        admission.enter("content")  # the database's doing: retry elsewhere

    admission.leave("messaging")
    admission.enter("content")  # the slot is free again
    assert admission.limits.in_flight == 1


def test_a_rate_limit_refusal_is_the_callers_even_while_the_database_is_slow() -> None:
    """A caller over its rate limit is RESOURCE_EXHAUSTED whatever the database is
    doing (UNAVAILABLE would send its client to retry on another replica, past the
    limit): only a hit concurrency limit may be blamed on a silent database."""
    now = [100.0]
    database = DatabaseStatus(stall_s=0.5, clock=lambda: now[0])
    admission = Admission(Limits(rate_per_s=1.0, burst=1, clock=lambda: now[0]), database)
    admission.enter("messaging")
    admission.leave("messaging")
    database.begin()  # a query waits, unanswered for a tenth of the stall timeout
    now[0] += 0.06
    with pytest.raises(errors.ResourceExhaustedError) as refused:
        admission.enter("messaging")
    assert "rate limit" in str(refused.value)


# -- the deadline budget -------------------------------------------------------------


def test_budget_is_the_callers_deadline_capped_by_the_statement_timeout() -> None:
    def budget(remaining: float | None) -> tuple[float, bool]:
        found = Call(Context(remaining=remaining), READER, 2.0).budget()  # type: ignore[arg-type]
        return found.seconds, found.from_deadline

    assert budget(None) == (2.0, False)  # no deadline: the statement timeout
    assert budget(30.0) == (2.0, False)
    assert budget(0.25) == (0.25, True)  # running out is DEADLINE_EXCEEDED
    with pytest.raises(errors.DeadlineExceededError):
        budget(0.0005)


# -- status mapping ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (errors.InvalidArgumentError("bad id"), grpc.StatusCode.INVALID_ARGUMENT),
        (errors.NotFoundError("no such user"), grpc.StatusCode.NOT_FOUND),
        (errors.AlreadyExistsError("taken"), grpc.StatusCode.ALREADY_EXISTS),
        (errors.UnauthenticatedError("no token"), grpc.StatusCode.UNAUTHENTICATED),
        (errors.PermissionDeniedError("no scope"), grpc.StatusCode.PERMISSION_DENIED),
        (errors.ResourceExhaustedError("busy"), grpc.StatusCode.RESOURCE_EXHAUSTED),
        (errors.DeadlineExceededError("late"), grpc.StatusCode.DEADLINE_EXCEEDED),
        (errors.UnavailableError("database down"), grpc.StatusCode.UNAVAILABLE),
    ],
)
def test_each_domain_error_has_its_status(error: errors.ServiceError, code: Any) -> None:
    assert status_for(error) == (code, str(error))


def test_anything_else_is_internal_and_says_nothing_about_itself() -> None:
    assert status_for(KeyError("secret detail")) == (grpc.StatusCode.INTERNAL, "internal error")


# -- the composed path ----------------------------------------------------------------


class Servicer:
    def __init__(self) -> None:
        self.calls: list[Call] = []

    @handler(READ, read=True)
    async def Echo(self, request: str, call: Call) -> str:
        self.calls.append(call)
        if request == "boom":
            raise RuntimeError("a bug with private details")
        return request.upper()


def path(limits: Limits | None = None) -> CallPath:
    return CallPath(
        Authorization(TOKENS, allow_unauthenticated_reads=False),
        Admission(limits or Limits(max_in_flight=4), DatabaseStatus()),
        Observation(metrics=False),
        default_budget_s=2.0,
        max_request_bytes=40_000,
    )


async def test_the_path_hands_the_handler_its_caller_and_releases_the_slot() -> None:
    servicer, limits = Servicer(), Limits(max_in_flight=4)
    method = path(limits).method("test.v1.Echo", "Echo", servicer.Echo)
    assert await method("hi", Context(bearer("reader-token-0123456789"))) == "HI"  # type: ignore[arg-type]
    assert servicer.calls[0].caller == READER
    assert limits.in_flight == 0


async def test_a_refused_caller_never_reaches_admission_or_the_handler() -> None:
    servicer, limits = Servicer(), Limits(max_in_flight=4)
    method = path(limits).method("test.v1.Echo", "Echo", servicer.Echo)
    with pytest.raises(Aborted) as refused:
        await method("hi", Context())  # type: ignore[arg-type]
    assert refused.value.code is grpc.StatusCode.UNAUTHENTICATED
    assert not servicer.calls
    assert limits.in_flight == 0


async def test_bodies_that_are_no_message_or_too_large_are_answered_by_the_path() -> None:
    servicer = Servicer()
    method = path().method("test.v1.Echo", "Echo", servicer.Echo)
    ctx = Context(bearer("reader-token-0123456789"))
    with pytest.raises(Aborted) as malformed:
        await method(MALFORMED, ctx)  # type: ignore[arg-type]
    assert malformed.value.code is grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(Aborted) as large:
        await method(TOO_LARGE, ctx)  # type: ignore[arg-type]
    assert large.value.code is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "40000" in large.value.message  # this server's own limit
    assert not servicer.calls


async def test_a_bug_is_internal_with_a_request_id_and_no_detail() -> None:
    method = path().method("test.v1.Echo", "Echo", Servicer().Echo)
    ctx = Context(bearer("reader-token-0123456789"), ("x-request-id", "req-42"))
    with pytest.raises(Aborted) as failed:
        await method("boom", ctx)  # type: ignore[arg-type]
    assert failed.value.code is grpc.StatusCode.INTERNAL
    assert failed.value.message == "internal error (request id req-42)"
    assert ctx.trailing == (("x-request-id", "req-42"),)
