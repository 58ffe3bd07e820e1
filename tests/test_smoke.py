from auth_client._proto.auth.v1 import auth_pb2


async def test_user_exists_for_unknown_id(auth_stub) -> None:
    reply = await auth_stub.UserExists(
        auth_pb2.UserExistsRequest(user_id="00000000-0000-4000-8000-000000000000"), timeout=5
    )
    assert reply.exists is False
    assert reply.state == auth_pb2.USER_STATE_NOT_FOUND
