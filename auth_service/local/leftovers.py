"""The servers this machine's embedded processes started, written down, so that the
ones a dead owner left behind are stopped by the next start.

Every embedded server (PostgreSQL, the embedded broker, an Apache Kafka node) runs
in its own session (`start_new_session`), so a Ctrl-C in the terminal reaches only
its owner, which stops it in order. An owner that dies without doing so (`dev`
killed with SIGKILL, a test run that crashed or timed out) leaves it running: it
keeps its port (the next `dev` would refuse 9092 as taken), its memory (a Kafka
JVM: a few hundred MB) and its temporary directory.

So each start writes one small file under `DIRECTORY` (the server's pid and start
time, its owner's, how to stop it, what to delete), removed when the owner stops
it; and before each start, `reap()` stops the servers whose owner is gone and
deletes their temporary directories. Only a dead owner's servers are touched: a
`dev` or a test run that is alive keeps its own. A pid is only trusted with its
start time (`/proc/PID/stat`), so a reused pid is never signalled. Where there is
no /proc (macOS), nothing is written and nothing reaped.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

log = logging.getLogger("auth_service.local")

DIRECTORY = Path(tempfile.gettempdir()) / f"auth-service-{os.getuid()}" / "servers"
_PROC = Path("/proc")


def _started(pid: int) -> int | None:
    """When process `pid` started (clock ticks since boot), or None if there is
    no such process (or it is a zombie: exited, not yet waited for)."""
    try:
        stat = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    # Fields after the command name (which may hold spaces and parentheses).
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] == "Z":
        return None
    return int(fields[19])


@dataclass(frozen=True)
class Server:
    """One started server, as written down."""

    what: str  # "embedded PostgreSQL on 127.0.0.1:5432": for the log line
    pid: int
    started: int
    owner: int
    owner_started: int
    stop_signal: int  # sent to the server's process group; SIGKILL after 10 s
    remove: str | None  # a temporary directory to delete once it is stopped

    @property
    def alive(self) -> bool:
        return _started(self.pid) == self.started

    @property
    def orphaned(self) -> bool:
        return _started(self.owner) != self.owner_started


def record(
    pid: int, what: str, *, stop_signal: int = signal.SIGKILL, remove: Path | None = None
) -> None:
    """Write down server `pid`, just started by this process (after `reap()`)."""
    started, owner_started = _started(pid), _started(os.getpid())
    if started is None or owner_started is None:
        return  # no /proc, or it exited already
    server = Server(what, pid, started, os.getpid(), owner_started, int(stop_signal), _str(remove))
    try:
        DIRECTORY.mkdir(parents=True, exist_ok=True, mode=0o700)
        partial = DIRECTORY / f"{pid}.partial"  # whole or absent to a reader
        partial.write_text(json.dumps(asdict(server)))
        partial.replace(DIRECTORY / f"{pid}.json")
    except OSError as exc:  # a read-only /tmp must not stop a start
        log.debug("cannot write down %s: %s", what, exc)


def forget(pid: int) -> None:
    """Its owner stopped server `pid` (or saw it exit)."""
    with contextlib.suppress(OSError):
        (DIRECTORY / f"{pid}.json").unlink()


def reap() -> list[str]:
    """Stop every written-down server whose owner is gone, delete its temporary
    directory, and say so (one line each); returns what was stopped."""
    stopped: list[str] = []
    for server in _written():
        if not server.orphaned:
            continue
        if server.alive:
            _stop(server)
            stopped.append(server.what)
            log.warning(
                "stopped %s (pid %d), left running by process %d, which is gone",
                server.what,
                server.pid,
                server.owner,
            )
        if server.remove:
            shutil.rmtree(server.remove, ignore_errors=True)
        forget(server.pid)
    return stopped


def _written() -> list[Server]:
    servers = []
    try:
        paths = sorted(DIRECTORY.glob("*.json"))
    except OSError:
        return []
    for path in paths:
        try:
            servers.append(Server(**json.loads(path.read_text())))
        except (OSError, ValueError, TypeError):  # by another version of this module
            with contextlib.suppress(OSError):
                path.unlink()
    return servers


def _stop(server: Server, timeout: float = 10.0) -> None:
    """The stop signal to the server's process group (a paused one is resumed to
    act on it); SIGKILL when it has not exited after `timeout`."""
    for sig in (signal.SIGCONT, server.stop_signal):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(server.pid, sig)
    deadline = time.monotonic() + timeout
    while server.alive and time.monotonic() < deadline:
        time.sleep(0.05)
    if server.alive:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(server.pid, signal.SIGKILL)
        while server.alive and time.monotonic() < deadline + 5:
            time.sleep(0.05)


def _str(path: Path | None) -> str | None:
    return None if path is None else str(path)


__all__ = ["DIRECTORY", "Server", "forget", "reap", "record"]
