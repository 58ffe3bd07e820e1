"""The two peers that drain an outbox into Kafka, as processes this bench can pause:
`auth-service relay` and Kafka Connect running Debezium. Only one runs while
the other is measured: the other is stopped with SIGSTOP (it holds its connections
and does nothing) and continued with SIGCONT."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from auth_service.local import leftovers
from bench import procstat
from bench.debezium.source import Outbox

REPO = Path(__file__).resolve().parents[2]
_TICK = os.sysconf("SC_CLK_TCK")


@dataclass
class Peer:
    """One drainer: its process (CPU and memory of it and its children) and the
    outbox it drains. `marks`: it writes back to the outbox (the relay marks each
    row published), so its delivery ends when no row is left unpublished."""

    name: str
    outbox: Outbox
    pid: int
    marks: bool

    def pause(self) -> None:
        os.kill(self.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.pid, signal.SIGCONT)

    def cpu_seconds(self) -> float:
        return procstat.tree_cpu_seconds(self.pid)

    def rss_bytes(self) -> int:
        return procstat.tree_rss_bytes(self.pid)

    def compiler_cpu_seconds(self) -> float:
        """CPU of the JVM's JIT compiler threads (none in CPython): how much of a
        young JVM's CPU is compiling rather than delivering."""
        return sum(cpu for name, cpu in thread_cpu_seconds(self.pid).items() if " Compiler" in name)


def thread_cpu_seconds(pid: int) -> dict[str, float]:
    """CPU (user + system) of each thread of process `pid`, summed by thread name."""
    out: dict[str, float] = {}
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            text = (task / "stat").read_text()
        except OSError:
            continue  # the thread ended
        name = text[text.index("(") + 1 : text.rindex(")")]
        fields = text[text.rindex(")") + 2 :].split()
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / _TICK
    return out


class RelayProcess:
    """`auth-service relay` on `database_url`, publishing to `topic`, as deployed
    beside `serve` (RELAY_ENABLED=false there); its defaults otherwise."""

    def __init__(self, database_url: str, bootstrap_servers: str, topic: str) -> None:
        self.env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap_servers,
            "KAFKA_TOPIC": topic,
        }
        self.base_dir = Path(tempfile.mkdtemp(prefix="auth-relay-"))
        self.log_path = self.base_dir / "relay.log"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    def start(self) -> None:
        leftovers.reap()
        log = self.log_path.open("ab")
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "auth_service", "relay"],
            cwd=REPO,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        leftovers.record(self._proc.pid, "the bench's outbox relay", remove=self.base_dir)

    def tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            os.kill(proc.pid, signal.SIGCONT)  # a stopped process cannot act on SIGTERM
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            leftovers.forget(proc.pid)
        shutil.rmtree(self.base_dir, ignore_errors=True)
