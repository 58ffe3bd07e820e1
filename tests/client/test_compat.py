"""An AuthClient of this release against a server of the previous one: a 0.1.0
server knows nothing of `BatchUserExistsRequest.states_only` and answers with one
`UserExistsResult` per id. The stand-in below is a real gRPC server on loopback that
answers exactly that way (the 0.1.0 contract's fields only)."""

from __future__ import annotations

import uuid
from typing import Any

import grpc

from auth_client import AuthClient, UserState
from auth_client.contract import auth_pb2, auth_pb2_grpc


class _OldServer(auth_pb2_grpc.AuthServiceServicer):  # type: ignore[misc]
    def __init__(self, active: set[str], deleted: set[str]) -> None:
        self.active, self.deleted = active, deleted
        self.requests: list[auth_pb2.BatchUserExistsRequest] = []

    def _state(self, user_id: str) -> int:
        if user_id in self.active:
            return auth_pb2.USER_STATE_ACTIVE
        if user_id in self.deleted:
            return auth_pb2.USER_STATE_DELETED
        return auth_pb2.USER_STATE_NOT_FOUND

    async def BatchUserExists(self, request: Any, context: Any) -> Any:
        self.requests.append(request)
        results = [
            auth_pb2.UserExistsResult(
                user_id=uid,
                exists=self._state(uid) == auth_pb2.USER_STATE_ACTIVE,
                state=self._state(uid),  # type: ignore[arg-type]
            )
            for uid in request.user_ids
        ]
        return auth_pb2.BatchUserExistsResponse(results=results)


async def test_a_client_reads_per_id_results_from_a_server_without_packed_states() -> None:
    active, deleted, never = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    old = _OldServer({str(active)}, {str(deleted)})
    server = grpc.aio.server()
    auth_pb2_grpc.add_AuthServiceServicer_to_server(old, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with AuthClient(target=f"127.0.0.1:{port}") as client:
            states = await client.user_states([active, deleted, never])
            exists = await client.users_exist([uuid.uuid4(), active])
    finally:
        await server.stop(None)

    assert states == {
        active: UserState.ACTIVE,
        deleted: UserState.DELETED,
        never: UserState.NOT_FOUND,
    }
    assert list(exists.values()) == [False, True]
    assert all(request.states_only for request in old.requests)  # asked, not answered
