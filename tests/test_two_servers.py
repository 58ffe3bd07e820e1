"""Two servers in one process keep their own state: what one was configured with
(its request size limit, its callers, its limits) never leaks into the other's
answers. Nothing in the call path is kept per process (api/rpc.py, api/parsing.py)."""

from __future__ import annotations

import grpc

from auth_client.contract import auth_pb2, auth_pb2_grpc
from auth_service.api.server import AuthServer
from auth_service.config.variables import MIN_REQUEST_BYTES
from tests.conftest import make_settings
from tests.helpers import expect_status


async def test_two_servers_in_one_process_each_answer_their_own_size_limit(
    database_url: str,
) -> None:
    small, large = MIN_REQUEST_BYTES, 2 * MIN_REQUEST_BYTES
    body = auth_pb2.UserExistsRequest(user_id="x" * (small + 1_000))  # over small, under large
    huge = auth_pb2.UserExistsRequest(user_id="x" * (large + 1_000))  # over both
    async with (
        AuthServer(make_settings(database_url, max_request_bytes=small)) as first,
        AuthServer(make_settings(database_url, max_request_bytes=large)) as second,
        grpc.aio.insecure_channel(first.address) as ch1,
        grpc.aio.insecure_channel(second.address) as ch2,
    ):
        one, two = auth_pb2_grpc.AuthServiceStub(ch1), auth_pb2_grpc.AuthServiceStub(ch2)
        err = await expect_status(
            one.UserExists(body, timeout=10), grpc.StatusCode.RESOURCE_EXHAUSTED
        )
        assert err.details() == f"request larger than {small} bytes"
        # The second server parses it (and finds no such id): its limit is its own.
        await expect_status(two.UserExists(body, timeout=10), grpc.StatusCode.INVALID_ARGUMENT)
        for stub, limit in ((one, small), (two, large), (one, small)):
            err = await expect_status(
                stub.UserExists(huge, timeout=10), grpc.StatusCode.RESOURCE_EXHAUSTED
            )
            assert err.details() == f"request larger than {limit} bytes"
