"""Helpers for the operations tests: the `auth-service` console script as a child
process (what the container's ENTRYPOINT runs), metrics scrapes, clean environments."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import tempfile
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

from prometheus_client.parser import text_string_to_metric_families

from auth_service.config import CLI_ENV_VARS, ENV_VARS

if TYPE_CHECKING:
    from collections.abc import Mapping

REPO = Path(__file__).resolve().parents[2]
# The console script `pip install .` creates: the image's ENTRYPOINT ["auth-service"].
CLI = str(Path(sys.executable).with_name("auth-service"))

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def clean_env(**values: str) -> dict[str, str]:
    """The test process's environment without any auth-service setting, plus `values`."""
    ours = {var.name for var in ENV_VARS} | set(CLI_ENV_VARS)
    env = {k: v for k, v in os.environ.items() if k not in ours}
    env.update(values)
    return env


def scrape(url: str, timeout: float = 10.0) -> str:
    """GET a /metrics URL (blocking: call it with asyncio.to_thread)."""
    with urllib.request.urlopen(url, timeout=timeout) as reply:
        assert reply.status == 200
        assert reply.headers["Content-Type"].startswith("text/plain")
        return str(reply.read().decode())


def parse(text: str) -> Samples:
    """Every sample of a text exposition, keyed by (sample name, labels)."""
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


async def samples(url: str) -> Samples:
    return parse(await asyncio.to_thread(scrape, url))


def value(found: Samples, name: str, **labels: str) -> float:
    """Sum of the samples called `name` whose labels include `labels`."""
    want = set(labels.items())
    return sum(v for (n, ls), v in found.items() if n == name and want <= ls)


def delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


async def run_cli(
    *args: str, env: Mapping[str, str], timeout: float = 60.0
) -> tuple[int, str, str]:
    """Run `auth-service ARGS` to completion: (exit code, stdout, stderr)."""
    proc = await asyncio.create_subprocess_exec(
        CLI,
        *args,
        env=dict(env),
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


class Service:
    """A long-running `auth-service ARGS` child (serve, relay) or any other command;
    stderr (where the JSON logs go) is kept in a file."""

    def __init__(self, *argv: str, env: Mapping[str, str]) -> None:
        self.argv = list(argv) if argv[0] != "auth-service" else [CLI, *argv[1:]]
        self.env = dict(env)
        fd, name = tempfile.mkstemp(prefix="ops-", suffix=".log")
        os.close(fd)
        self.log_path = Path(name)
        self._proc: asyncio.subprocess.Process | None = None

    async def __aenter__(self) -> Self:
        with self.log_path.open("wb") as err:
            self._proc = await asyncio.create_subprocess_exec(
                *self.argv,
                cwd=REPO,
                env=self.env,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=err,
            )
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
        self.log_path.unlink(missing_ok=True)

    @property
    def returncode(self) -> int | None:
        return None if self._proc is None else self._proc.returncode

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def json_lines(self) -> list[dict[str, Any]]:
        """Every stderr line parsed as JSON (fails on a line that is not JSON)."""
        return [json.loads(line) for line in self.output().splitlines() if line.strip()]

    async def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, wait for a graceful exit (SIGKILL after `timeout`)."""
        proc = self._proc
        assert proc is not None
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), timeout)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        assert proc.returncode is not None
        return proc.returncode

    async def wait_until_up(self, check: Any, timeout: float = 60.0) -> None:
        """Poll the async `check()` until it is true; fail with the child's output if
        the child exits or the time runs out."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            with contextlib.suppress(Exception):
                if await check():
                    return
            if self.returncode is not None:
                raise AssertionError(f"{self.argv} exited {self.returncode}:\n{self.output()}")
            if loop.time() > deadline:
                raise AssertionError(f"{self.argv} not up in {timeout}s:\n{self.output()}")
            await asyncio.sleep(0.2)
