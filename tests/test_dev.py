"""`auth-service dev` as a new user runs it, driven by a generic gRPC client (buf curl,
schema from server reflection, no proto files)."""

from __future__ import annotations

import asyncio
import json
import re
import shlex
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from auth_client import AuthClient, ReplicaConfig
from auth_client.contract import admin_pb2, admin_pb2_grpc
from auth_service.cli import build_parser
from auth_service.local.embedded import free_port
from tests.dev import REPO, DevProcess, dev_env

BUF = Path(sys.executable).parent / "buf"
TOKEN = "dev-test-token-0123456789"


@pytest.fixture
def dev_server() -> Iterator[tuple[str, list[str], str]]:
    with DevProcess("--admin-token", TOKEN) as dev:
        output = dev.read_banner()
        yield dev.target, list(dev.users.values()), output
        assert dev.stop() == 0


def _buf_curl(
    address: str, method: str, body: dict[str, object], token: str | None = None
) -> dict[str, object]:
    cmd = [
        str(BUF),
        "curl",
        "--protocol",
        "grpc",
        "--http2-prior-knowledge",
        "--emit-defaults",
        "-d",
        json.dumps(body),
    ]
    if token:
        cmd += ["-H", f"authorization: Bearer {token}"]
    cmd.append(f"http://{address}/{method}")
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout)


def _port_open(address: str) -> bool:
    host, port = address.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=1):
            return True
    except OSError:
        return False


@pytest.mark.skipif(not BUF.exists(), reason="buf-bin not installed")
def test_dev_serves_demo_users_to_a_generic_client(dev_server) -> None:
    address, demo_ids, banner = dev_server
    assert TOKEN in banner
    assert len(demo_ids) == 3

    exists = _buf_curl(address, "auth.v1.AuthService/UserExists", {"user_id": demo_ids[0]})
    assert exists == {"exists": True, "state": "USER_STATE_ACTIVE"}

    created = _buf_curl(
        address, "auth.v1.UserAdminService/CreateUser", {"username": "dave"}, token=TOKEN
    )
    new_id = created["user"]["id"]  # type: ignore[index]

    got = _buf_curl(address, "auth.v1.AuthService/GetUser", {"user_id": new_id})
    assert got["user"]["username"] == "dave"  # type: ignore[index]

    deleted = _buf_curl(
        address, "auth.v1.UserAdminService/DeleteUser", {"user_id": new_id}, token=TOKEN
    )
    assert deleted["alreadyDeleted"] is False

    batch = _buf_curl(
        address, "auth.v1.AuthService/BatchUserExists", {"userIds": [demo_ids[1], new_id]}
    )
    assert [r["state"] for r in batch["results"]] == [  # type: ignore[index, union-attr]
        "USER_STATE_ACTIVE",
        "USER_STATE_DELETED",
    ]


def test_ctrl_c_stops_everything_dev_started() -> None:
    port, kafka_port = free_port(), free_port()
    with DevProcess(
        "--listen", f"127.0.0.1:{port}", "--kafka-listen", f"127.0.0.1:{kafka_port}"
    ) as dev:
        banner = dev.read_banner()
        pg_port = int(re.findall(r"PostgreSQL on 127\.0\.0\.1:(\d+)", banner)[0])
        started = [f"127.0.0.1:{p}" for p in (port, kafka_port, pg_port)]
        assert all(_port_open(a) for a in started)
        assert dev.stop() == 0
        assert not any(_port_open(a) for a in started)


def test_the_banners_try_it_commands_run_as_printed() -> None:
    """A new user copies the banner's lines into a shell in the checkout: they work
    (no grpcurl that is not installed, no bare `auth-service` that is not on PATH)."""
    with DevProcess() as dev:
        dev.read_banner()
        commands = dev.try_it
        assert len(commands) >= 2, dev.output
        for command in commands:
            assert not command.startswith(("grpcurl", "auth-service")), command
            result = subprocess.run(
                command,
                shell=True,
                cwd=REPO,
                env={k: v for k, v in dev_env().items() if not k.startswith("AUTH_SERVICE_")},
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            assert result.returncode == 0, f"{command}\n{result.stdout}{result.stderr}"
        assert (
            '"exists": true'
            in subprocess.run(
                commands[0], shell=True, cwd=REPO, capture_output=True, text=True, check=True
            ).stdout
        )


def _readme_commands(section: str) -> list[str]:
    """The commands of the README section `section`'s sh blocks, one per line
    (continuations joined, comments dropped), as a user pastes them."""
    readme = (REPO / "README.md").read_text()
    text = readme.split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0]
    commands = []
    for block in re.findall(r"```sh\n(.*?)```", text, re.DOTALL):
        for line in re.sub(r"\\\n\s*", " ", block).splitlines():
            command = line.split(" #", 1)[0].strip()
            if command:
                commands.append(command)
    return commands


def _shell(command: str, env: dict[str, str]) -> dict[str, Any]:
    """Run `command` as a user's shell in the checkout would, with unset variables an
    error (`bash -u`); the JSON it printed."""
    result = subprocess.run(
        ["bash", "-u", "-c", command],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, f"{command}\n{result.stdout}{result.stderr}"
    answer: dict[str, Any] = json.loads(result.stdout)
    return answer


def _created(answer: dict[str, Any]) -> tuple[str, str] | None:
    """(username, id) of the user an answer shows (CreateUser's, or the CLI's)."""
    user = answer.get("user", answer)
    return (user["username"], user["id"]) if "username" in user else None


@pytest.mark.skipif(not BUF.exists(), reason="buf-bin not installed")
def test_the_readmes_commands_run_as_written_after_the_banners() -> None:
    """#29: done in order after the Quick start, the banner's try-it, the README's
    API section and its Admin CLI section all work against one `dev`: no variable
    nothing defines (`bash -u`; the API section used `$TOKEN`), no user created twice
    (all three created "dave"). Placeholders are filled in as a reader would: the
    banner's admin token and demo ids, and the id the section's create printed."""
    for command in _readme_commands("Quick start"):
        words = shlex.split(command)
        if words[0] == ".venv/bin/auth-service":
            build_parser().parse_args(words[1:])  # SystemExit = a flag that does not exist
    with DevProcess() as dev:
        banner = dev.read_banner()
        token = re.findall(r"admin token\s+(\S+)", banner)[0]
        demo = list(dev.users.values())
        env = {k: v for k, v in dev_env().items() if not k.startswith("AUTH_SERVICE_")}
        created = dict(filter(None, (_created(_shell(c, env)) for c in dev.try_it)))
        for section in ("API", "Admin CLI"):
            latest: str | None = None
            for template in _readme_commands(section):
                command = (
                    template.replace("127.0.0.1:50051", dev.target)
                    .replace("<admin token>", token)
                    .replace("<id1>", demo[1])
                    .replace("<id2>", demo[2])
                    .replace("<id>", latest or demo[0])
                    .replace(".venv/bin/", f"{BUF.parent}/")
                )
                if command.startswith("export "):
                    env.update(word.split("=", 1) for word in shlex.split(command)[1:])
                    continue
                answer = _shell(command, env)
                user = _created(answer)
                if user and user[1] not in created.values():  # a new user, not a `get`
                    assert user[0] not in created, f"{section}: {user[0]} was created before"
                    created[user[0]] = latest = user[1]
            assert latest is not None, f"the {section} section creates no user"
        assert set(created) == {"dave", "erin", "frank"}
        assert answer == {  # the Admin CLI section ends by deleting its user
            "user_id": created["frank"],
            "already_deleted": False,
            "deleted_at": answer["deleted_at"],
        }


def test_an_exported_database_url_is_named_and_an_unreachable_one_fails_at_once(
    new_database,
) -> None:
    """dev uses an exported DATABASE_URL instead of its embedded PostgreSQL: it says
    so, and a stale one fails fast with the reason instead of waiting silently."""
    dead = f"postgresql://postgres@127.0.0.1:{free_port()}/auth"
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "auth_service", "dev", "--listen", f"127.0.0.1:{free_port()}"],
        env=dev_env(DATABASE_URL=dead),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert time.monotonic() - started < 15
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("auth-service: DATABASE_URL is exported")
    assert "connection refused" in last
    assert "unset DATABASE_URL" in last

    with DevProcess(env=dev_env(DATABASE_URL=new_database())) as dev:
        banner = dev.read_banner()
        assert "(from DATABASE_URL; unset it for the embedded one)" in banner
    help_text = subprocess.run(
        [sys.executable, "-m", "auth_service", "dev", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "DATABASE_URL" in help_text
    assert "KAFKA_BOOTSTRAP_SERVERS" in help_text


def test_a_taken_port_is_one_clear_line() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        for flags in (
            ["--kafka-listen", f"127.0.0.1:{port}", "--listen", f"127.0.0.1:{free_port()}"],
            ["--listen", f"127.0.0.1:{port}", "--kafka-listen", f"127.0.0.1:{free_port()}"],
        ):
            result = subprocess.run(
                [sys.executable, "-m", "auth_service", "dev", *flags],
                capture_output=True,
                text=True,
                timeout=120,
                env=dev_env(),
                check=False,
            )
            assert result.returncode == 1
            last = result.stderr.strip().splitlines()[-1]
            assert last.startswith("auth-service: ")
            assert f"127.0.0.1:{port}" in last
            assert "Traceback" not in result.stderr


def test_free_ports_handed_out_in_one_process_are_distinct() -> None:
    """Fixtures pick a gRPC, metrics and broker port with consecutive free_port()
    calls; the kernel can return the same free port twice in a row (3-5 repeats in
    300 calls here), and then two listeners of one test collide."""
    ports = [free_port() for _ in range(300)]
    assert len(set(ports)) == len(ports)


async def test_a_client_replica_follows_dev_and_answers_without_rpcs() -> None:
    """#30 from a real `dev`: a client's local replica loads dev's users, answers
    them with no RPC, and sees a user created afterwards without one (dev turns the
    user_created events on). The wait is bounded at 10 s for a loaded CI machine;
    its latency is measured in bench/ (python -m bench --only client_replica)."""
    with DevProcess("--admin-token", TOKEN) as dev:
        await asyncio.to_thread(dev.read_banner)
        demo = list(dev.users.values())
        replica = ReplicaConfig(bootstrap_servers=dev.kafka)
        async with AuthClient(dev.target, replica=replica) as client:
            rpcs = client.stats().rpcs
            for _ in range(100):
                for user_id in demo:
                    assert await client.user_exists(user_id)
            assert client.stats().rpcs == rpcs  # 300 answers, no RPC
            async with grpc.aio.insecure_channel(dev.target) as channel:
                created = await admin_pb2_grpc.UserAdminServiceStub(channel).CreateUser(
                    admin_pb2.CreateUserRequest(username="replica_dev"),
                    metadata=(("authorization", f"Bearer {TOKEN}"),),
                    timeout=10,
                )
            deadline = time.monotonic() + 10
            while client.replica_stats().users < len(demo) + 1:
                assert time.monotonic() < deadline, client.replica_stats()
                await asyncio.sleep(0.02)
            assert await client.user_exists(created.user.id)
            assert client.stats().rpcs == rpcs
        assert await asyncio.to_thread(dev.stop) == 0


async def test_the_event_topics_exist_when_the_banner_is_printed() -> None:
    """A client started as soon as dev's banner appears (a replica, a downstream
    consumer) finds both topics dev publishes to: the embedded broker creates a
    topic only when first used, and the relay may not have used it yet."""
    from aiokafka.admin import AIOKafkaAdminClient  # noqa: PLC0415 - extra `events`

    with DevProcess("--admin-token", TOKEN) as dev:
        await asyncio.to_thread(dev.read_banner)
        admin = AIOKafkaAdminClient(bootstrap_servers=dev.kafka)
        try:
            await admin.start()
            topics = set(await admin.list_topics())
        finally:
            await admin.close()
        assert {"user_deleted", "user_created"} <= topics, topics
        assert await asyncio.to_thread(dev.stop) == 0


def test_a_dev_killed_with_sigkill_does_not_block_the_next_one() -> None:
    """`dev` killed hard (SIGKILL, an OOM kill, a closed container) cannot stop its
    PostgreSQL and broker; the next `dev` on the same ports stops them, says so,
    and starts, instead of refusing the broker's port as taken."""
    kafka = f"127.0.0.1:{free_port()}"
    first = DevProcess("--admin-token", TOKEN, "--kafka-listen", kafka)
    first.read_banner()
    postgres = re.search(r"postgresql://\S+@(127\.0\.0\.1:\d+)/", first.output)
    assert postgres is not None, first.output
    first.proc.kill()
    first.stop()
    assert _port_open(kafka)  # both left running
    assert _port_open(postgres.group(1))
    with DevProcess("--admin-token", TOKEN, "--kafka-listen", kafka) as second:
        output = second.read_banner()
        assert f"stopped embedded broker on {kafka}" in output
        assert "stopped embedded PostgreSQL" in output
        assert not _port_open(postgres.group(1))
        assert second.stop() == 0
