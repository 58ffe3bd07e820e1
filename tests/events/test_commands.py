"""`auth-service relay` (several replicas) and `auth-service dev --kafka-listen`."""

from __future__ import annotations

import asyncio
import os
import uuid

import grpc

from auth_client.contract import admin_pb2, admin_pb2_grpc
from auth_service.api.server import AuthServer
from auth_service.local.embedded import free_port
from tests.conftest import eventually, make_settings
from tests.events.support import Collector, Proc, admin_stub, outbox_rows, running
from tests.helpers import create_user, delete_user

CLI = "auth_service"


def _env(**values: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "RELAY_"))}
    env.pop("DATABASE_URL", None)
    env.update(values)
    return env


async def test_relay_command_replicas_publish_every_event(
    database_url: str, kafka_bootstrap: str, topic: str
) -> None:
    async with AuthServer(make_settings(database_url)) as server:  # no relay inside
        async with admin_stub(server.address) as admin:
            users = [(await create_user(admin)).id for _ in range(20)]
            for user_id in users:
                await delete_user(admin, user_id)
    env = _env(
        DATABASE_URL=database_url,
        KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap,
        KAFKA_TOPIC=topic,
        RELAY_BATCH_SIZE="3",
        LOG_FORMAT="json",
    )
    async with Collector(kafka_bootstrap, topic) as seen:
        one = await Proc(CLI, "relay", env=env).start()
        two = await Proc(CLI, "relay", env=env).start()
        try:
            await eventually(lambda: _true(len(set(seen.user_ids())) == 20), timeout=90)
        finally:
            codes = await asyncio.gather(one.terminate(), two.terminate())
            logs = one.stderr() + two.stderr()
            await one.close()
            await two.close()
    assert codes == [0, 0], logs
    assert set(seen.user_ids()) == set(users)
    assert all(r["published_at"] is not None for r in await outbox_rows(database_url))


async def test_relay_command_requires_kafka(database_url: str) -> None:
    proc = await Proc(CLI, "relay", env=_env(DATABASE_URL=database_url)).start()
    code = await proc.wait(timeout=60)
    stderr = proc.stderr()
    await proc.close()
    assert code == 2
    assert "KAFKA_BOOTSTRAP_SERVERS" in stderr


async def test_dev_starts_a_broker_and_publishes_deletions() -> None:
    kafka_port, grpc_port = free_port(), free_port()
    token = f"dev-token-{uuid.uuid4().hex}"
    args = ("dev", "--listen", f"127.0.0.1:{grpc_port}", "--admin-token", token)
    args += ("--kafka-listen", f"127.0.0.1:{kafka_port}")
    async with running(CLI, *args, env=_env()) as dev:
        bootstrap = f"127.0.0.1:{kafka_port}"
        await dev.wait_for(lambda _: any("Ctrl-C" in line for line in dev.text), timeout=120)
        banner = "\n".join(dev.text)
        assert f"kafka         {bootstrap}" in banner
        assert "topic user_deleted" in banner
        alice = next(line.split()[-1] for line in dev.text if line.strip().startswith("alice"))

        async with Collector(bootstrap, "user_deleted") as seen:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
                await admin_pb2_grpc.UserAdminServiceStub(channel).DeleteUser(
                    admin_pb2.DeleteUserRequest(user_id=alice),
                    metadata=(("authorization", f"Bearer {token}"),),
                    timeout=10,
                )
            await eventually(lambda: _true(seen.user_ids() == [alice]), timeout=60)
        assert await dev.terminate(timeout=60) == 0


async def _true(value: bool) -> bool:
    return value
