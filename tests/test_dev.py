"""`auth-service dev` as a new user runs it, driven by a generic gRPC client (buf curl,
schema from server reflection, no proto files)."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from auth_service.local.embedded import free_port

BUF = Path(sys.executable).parent / "buf"
TOKEN = "dev-test-token-0123456789"


@pytest.fixture
def dev_server() -> Iterator[tuple[str, list[str], str]]:
    port = free_port()
    proc = _start_dev(
        "--listen",
        f"127.0.0.1:{port}",
        "--admin-token",
        TOKEN,
        "--kafka-listen",
        f"127.0.0.1:{free_port()}",
    )
    try:
        output = _read_banner(proc)
        ids = re.findall(r"^\s+\w+\s+([0-9a-f-]{36})$", output, re.MULTILINE)
        yield f"127.0.0.1:{port}", ids, output
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def _dev_env() -> dict[str, str]:
    """The environment without the variables that make dev use external servers."""
    return {
        k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS"}
    }


def _start_dev(*flags: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "auth_service", "dev", *flags],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=_dev_env(),
    )


def _read_banner(proc: subprocess.Popen[str]) -> str:
    assert proc.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if "Ctrl-C" in line:
            break
    output = "".join(lines)
    assert "Ctrl-C" in output, output
    return output


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
    proc = _start_dev("--listen", f"127.0.0.1:{port}", "--kafka-listen", f"127.0.0.1:{kafka_port}")
    try:
        banner = _read_banner(proc)
        pg_port = int(re.findall(r"PostgreSQL on 127\.0\.0\.1:(\d+)", banner)[0])
        started = [f"127.0.0.1:{p}" for p in (port, kafka_port, pg_port)]
        assert all(_port_open(a) for a in started)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0
        assert not any(_port_open(a) for a in started)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


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
                env=_dev_env(),
                check=False,
            )
            assert result.returncode == 1
            last = result.stderr.strip().splitlines()[-1]
            assert last.startswith("auth-service: ")
            assert f"127.0.0.1:{port}" in last
            assert "Traceback" not in result.stderr
