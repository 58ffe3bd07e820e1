"""Servers left running by an owner that died without stopping them (a test run
killed or timed out, `dev` under SIGKILL) are stopped by the next start, and their
temporary directories deleted; a live owner's servers are never touched."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from auth_service.local import leftovers
from auth_service.local.apache_kafka import missing as apache_kafka_missing
from auth_service.local.broker import EmbeddedKafka
from tests.dev import REPO

# Starts the servers named on its command line, prints what it started as one JSON
# line, then waits to be killed.
OWNER = textwrap.dedent(
    """
    import json, sys, time
    from auth_service.local.apache_kafka import ApacheKafka
    from auth_service.local.broker import EmbeddedKafka
    from auth_service.local.embedded import EmbeddedPostgres

    started = []
    for kind in sys.argv[1:]:
        if kind == "postgres":
            server = EmbeddedPostgres()
            server.start()
            started.append((server._proc.pid, str(server.base_dir)))
        elif kind == "broker":
            server = EmbeddedKafka()
            server.start()
            started.append((server._proc.pid, str(server.base_dir)))
        else:
            server = ApacheKafka(heap="256m")
            server.start()
            started.append((server.nodes[0].proc.pid, str(server.base_dir)))
    print(json.dumps(started), flush=True)
    time.sleep(600)
    """
)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


class Owner:
    """A process that starts servers and is then SIGKILLed."""

    def __init__(self, *kinds: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", OWNER, *kinds],
            cwd=REPO,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line, f"the owner did not start its servers ({self.proc.wait()})"
        self.servers: list[tuple[int, str]] = [tuple(s) for s in json.loads(line)]

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()
        assert self.proc.stdout is not None
        self.proc.stdout.close()

    def stop_leftovers(self) -> None:
        """Whatever the test did not get to: never leave a server behind."""
        for pid, directory in self.servers:
            if _alive(pid):
                os.killpg(pid, signal.SIGKILL)
            subprocess.run(["rm", "-rf", directory], check=False)


@pytest.fixture
def owner(request: pytest.FixtureRequest) -> Iterator[Owner]:
    started = Owner(*request.param)
    try:
        yield started
    finally:
        if started.proc.poll() is None:
            started.kill()
        started.stop_leftovers()


pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")


@pytest.mark.parametrize("owner", [("postgres", "broker")], indirect=True)
def test_a_dead_owners_servers_are_stopped_by_the_next_start(
    owner: Owner, caplog: pytest.LogCaptureFixture
) -> None:
    owner.kill()
    # Left running by the dead owner: ports, memory and directories held.
    assert all(_alive(pid) for pid, _ in owner.servers)
    with EmbeddedKafka() as broker:
        assert broker.running
        assert not any(_alive(pid) for pid, _ in owner.servers)
        assert not any(Path(directory).exists() for _, directory in owner.servers)
    said = [r.getMessage() for r in caplog.records if r.name == "auth_service.local"]
    assert any("embedded PostgreSQL" in m and "which is gone" in m for m in said), said
    assert any("embedded broker" in m and "which is gone" in m for m in said), said


@pytest.mark.parametrize("owner", [("broker",)], indirect=True)
def test_a_live_owners_servers_are_left_alone(owner: Owner) -> None:
    with EmbeddedKafka():
        pass
    assert all(_alive(pid) for pid, _ in owner.servers)
    assert all(Path(directory).exists() for _, directory in owner.servers)


def _java_or_skip() -> None:
    problem = apache_kafka_missing()
    if problem is not None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"Apache Kafka is required in CI: {problem}")
        pytest.skip(f"Apache Kafka not available: {problem}")


@pytest.fixture
def java() -> None:
    _java_or_skip()


@pytest.mark.parametrize("owner", [("apache-kafka",)], indirect=True)
def test_an_apache_kafka_jvm_of_a_crashed_test_run_is_stopped(java: None, owner: Owner) -> None:
    """A test run killed mid-way (CI's timeout, Ctrl-\\) used to leave its Kafka
    JVMs running, a few hundred MB each, until the machine rebooted."""
    owner.kill()
    [(jvm, directory)] = owner.servers
    assert _alive(jvm)
    stopped = leftovers.reap()
    assert any(what.startswith("Apache Kafka node 1 on ") for what in stopped), stopped
    assert not _alive(jvm)
    assert not Path(directory).exists()


def _write(directory: Path, **fields: Any) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{fields['pid']}.json").write_text(json.dumps(fields))


def test_a_reused_pid_is_never_signalled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A server's pid taken by another process since (it exited, the machine
    rebooted): its start time differs, so the process is left alone; the dead
    owner's directory and entry are removed."""
    monkeypatch.setattr(leftovers, "DIRECTORY", tmp_path / "servers")
    bystander = subprocess.Popen(["sleep", "60"], start_new_session=True)
    kept = tmp_path / "left-behind"
    kept.mkdir()
    try:
        _write(
            leftovers.DIRECTORY, what="embedded broker on 127.0.0.1:1", pid=bystander.pid,
            started=1, owner=bystander.pid, owner_started=1, stop_signal=9, remove=str(kept),
        )  # fmt: skip
        assert leftovers.reap() == []
        assert bystander.poll() is None
        assert not kept.exists()
        assert list(leftovers.DIRECTORY.iterdir()) == []
    finally:
        bystander.kill()
        bystander.wait()
