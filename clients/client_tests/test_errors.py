"""The one mapping from gRPC errors to the library's exception tree (a pure unit)."""

from __future__ import annotations

import uuid

import grpc
import pytest

from auth_client import (
    AuthClientError,
    DeadlineExceededError,
    InvalidRequestError,
    PermissionDeniedError,
    ServiceUnavailableError,
    UnauthenticatedError,
    UserNotFoundError,
)
from auth_client._errors import raise_for_rpc_error


class FakeRpcError(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode) -> None:
        self._code = code

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return "details"


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (grpc.StatusCode.NOT_FOUND, UserNotFoundError),
        (grpc.StatusCode.INVALID_ARGUMENT, InvalidRequestError),
        (grpc.StatusCode.PERMISSION_DENIED, PermissionDeniedError),
        (grpc.StatusCode.UNAUTHENTICATED, UnauthenticatedError),
        (grpc.StatusCode.UNAVAILABLE, ServiceUnavailableError),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, ServiceUnavailableError),
        (grpc.StatusCode.DEADLINE_EXCEEDED, DeadlineExceededError),
        (grpc.StatusCode.INTERNAL, ServiceUnavailableError),
        (grpc.StatusCode.UNIMPLEMENTED, AuthClientError),
    ],
)
def test_every_status_maps_to_one_error_chained_to_the_rpc_error(code, expected) -> None:
    rpc_error = FakeRpcError(code)
    with pytest.raises(AuthClientError) as info:
        raise_for_rpc_error(rpc_error, "UserExists", [uuid.uuid4()])
    assert type(info.value) is expected
    assert info.value.__cause__ is rpc_error
    assert info.value.code is code


def test_a_non_grpc_error_is_a_transport_failure() -> None:
    cause = OSError("connection reset")
    with pytest.raises(ServiceUnavailableError) as info:
        raise_for_rpc_error(cause, "UserExists")
    assert info.value.__cause__ is cause
    assert info.value.code is None
