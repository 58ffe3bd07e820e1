"""`auth-service dev` as a child process, started the one way every test starts it:
free ports for gRPC and the embedded broker unless the test picks them, the banner
read from stdout, Ctrl-C (SIGINT) to stop."""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Self

from auth_service.local.embedded import free_port

REPO = Path(__file__).resolve().parent.parent
BANNER_END = "Ctrl-C stops everything"


def dev_env(**extra: str) -> dict[str, str]:
    """The environment without the variables that make dev use external servers."""
    env = {
        k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS"}
    }
    return {**env, **extra}


class DevProcess:
    """`python -m auth_service dev FLAGS` (cwd: the repository, as a user runs it)."""

    def __init__(self, *flags: str, env: dict[str, str] | None = None) -> None:
        args = list(flags)
        if "--listen" not in args:
            args += ["--listen", f"127.0.0.1:{free_port()}"]
        if "--kafka-listen" not in args:
            args += ["--kafka-listen", f"127.0.0.1:{free_port()}"]
        self.target = args[args.index("--listen") + 1]
        self.kafka = args[args.index("--kafka-listen") + 1]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "auth_service", "dev", *args],
            env=env if env is not None else dev_env(),
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        self.output = ""

    def read_banner(self, timeout: float = 90) -> str:
        """Everything dev printed up to the end of its banner (fails the test if dev
        exits or takes longer). Reads the raw pipe: no buffering between select()
        and the data."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        out = b""
        while time.monotonic() < deadline and BANNER_END.encode() not in out:
            ready, _, _ = select.select([fd], [], [], 0.5)
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    break
                out += chunk
        self.output = out.decode(errors="replace")
        if BANNER_END not in self.output:
            raise AssertionError(f"auth-service dev did not start ({self.proc.poll()}):\n{out!r}")
        return self.output

    @property
    def users(self) -> dict[str, str]:
        """The demo users the banner lists: name -> id."""
        return dict(re.findall(r"^\s+(\w+)\s+([0-9a-f-]{36})$", self.output, re.MULTILINE))

    @property
    def try_it(self) -> list[str]:
        """The commands under "try it" in the banner."""
        block = self.output.split("try it", 1)[1].split(BANNER_END, 1)[0]
        return [line.strip() for line in block.splitlines()[1:] if line.strip()]

    def stop(self, timeout: float = 60) -> int:
        """Ctrl-C; the exit code (killed after `timeout`)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return self.proc.returncode

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop(timeout=20)
