"""`auth-service serve --workers N`: N processes on one port, stopped together."""

from __future__ import annotations

import asyncio
import os
import signal
import sys

import grpc
import psutil

from auth_client.contract import auth_pb2, auth_pb2_grpc
from auth_service.local.embedded import free_port
from tests.conftest import eventually
from tests.helpers import ADMIN_MD, ADMIN_TOKEN

NEVER = "00000000-0000-4000-8000-000000000000"


async def _start(database_url: str, port: int, workers: int) -> asyncio.subprocess.Process:
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "ADMIN_TOKENS": ADMIN_TOKEN,
        "RELAY_ENABLED": "false",
        "SHUTDOWN_GRACE_S": "2",
    }
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "auth_service",
        "serve",
        "--listen",
        f"127.0.0.1:{port}",
        "--workers",
        str(workers),
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )


def _listeners(parent_pid: int, port: int) -> set[int]:
    pids = set()
    for child in psutil.Process(parent_pid).children():
        try:
            conns = child.net_connections(kind="tcp")
        except psutil.Error:
            continue
        if any(c.status == psutil.CONN_LISTEN and c.laddr.port == port for c in conns):
            pids.add(child.pid)
    return pids


async def _answers(port: int) -> bool:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
        try:
            reply = await auth_pb2_grpc.AuthServiceStub(ch).UserExists(
                auth_pb2.UserExistsRequest(user_id=NEVER), metadata=ADMIN_MD, timeout=2
            )
        except grpc.aio.AioRpcError:
            return False
        return reply.state == auth_pb2.USER_STATE_NOT_FOUND


async def test_two_workers_share_the_port_and_stop_together(database_url: str) -> None:
    port = free_port()
    proc = await _start(database_url, port, workers=2)
    try:
        await eventually(lambda: _answers(port), timeout=30)

        async def two_listening() -> bool:
            return len(_listeners(proc.pid, port)) == 2

        await eventually(two_listening, timeout=30)
        results = await asyncio.gather(*(_answers(port) for _ in range(20)))
        assert all(results)
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), timeout=30) == 0
        assert (
            not psutil.pid_exists(proc.pid)
            or psutil.Process(proc.pid).status() == psutil.STATUS_ZOMBIE
        )
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_a_dead_worker_takes_the_unit_down(database_url: str) -> None:
    port = free_port()
    proc = await _start(database_url, port, workers=2)
    try:

        async def two_listening() -> bool:
            return len(_listeners(proc.pid, port)) == 2

        await eventually(two_listening, timeout=30)
        victim = min(_listeners(proc.pid, port))
        os.kill(victim, signal.SIGKILL)
        code = await asyncio.wait_for(proc.wait(), timeout=30)
        assert code != 0
        assert not await _answers(port)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_workers_need_a_fixed_port(database_url: str) -> None:
    env = {**os.environ, "DATABASE_URL": database_url, "RELAY_ENABLED": "false"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "auth_service",
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--workers",
        "2",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(proc.communicate(), timeout=30)
    assert proc.returncode == 2
    assert b"fixed port" in err
