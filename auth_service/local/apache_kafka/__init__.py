"""Apache Kafka itself for the tests and benchmarks: KRaft nodes (broker and
controller in one JVM each) on free loopback ports, one node or a cluster of three.

- **The classpath** is the checked-in Maven description beside this file
  (`pom.xml`, the version docker-compose.yml runs), resolved once with Maven and
  cached (`classpath()`); nothing is downloaded but Maven Central's artifacts.
- **The settings** are docker-compose.yml's `kafka` service environment, read and
  turned into `server.properties` the way the apache/kafka image does
  (`KAFKA_AUTO_CREATE_TOPICS_ENABLE` -> `auto.create.topics.enable`): one source for
  both. Only what must differ per node here is replaced (node id, listeners,
  controller voters, log dir) and, for a cluster, the replication settings
  (`replication_settings`: replication 3, `min.insync.replicas=2`).
- **The log dirs are kept** across a node's restart (`stop_node` / `start_node`), as
  a real broker keeps its disk; `close()` removes them.
- A node's heap is bounded (`heap`, default 384 MiB): three brokers and the test
  suite share 2 cores here.

Needs Java 17+ and Maven; `missing()` says in one line what to install.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from auth_service.local import leftovers
from auth_service.local.embedded import EmbeddedError, free_port

POM = Path(__file__).with_name("pom.xml")
REPO = Path(__file__).resolve().parents[3]
COMPOSE_FILE = REPO / "docker-compose.yml"
INSTALL_HINT = "apt-get install openjdk-17-jre-headless maven (Java 17+ and Maven)"

# Set per node here, whatever the compose file says.
_PER_NODE = frozenset(
    {
        "CLUSTER_ID",
        "KAFKA_NODE_ID",
        "KAFKA_LISTENERS",
        "KAFKA_ADVERTISED_LISTENERS",
        "KAFKA_CONTROLLER_QUORUM_VOTERS",
        "KAFKA_LOG_DIRS",
    }
)


def replication_settings(nodes: int) -> dict[str, str]:
    """What a cluster of `nodes` sets beyond the compose file (a single node keeps
    its replication factors of 1): every topic on 3 brokers, writes acknowledged by
    at least 2 (`acks=all`)."""
    if nodes < 3:
        return {}
    return {
        "default.replication.factor": "3",
        "min.insync.replicas": "2",
        "offsets.topic.replication.factor": "3",
        "transaction.state.log.replication.factor": "3",
        "transaction.state.log.min.isr": "2",
    }


def kafka_version() -> str:
    """The Apache Kafka version the pom pins."""
    found = re.search(r"<kafka\.version>([^<]+)</kafka\.version>", POM.read_text())
    if found is None:  # pragma: no cover - the checked-in pom has it
        raise EmbeddedError(f"{POM}: no <kafka.version>")
    return found.group(1)


def java() -> str:
    """The `java` of JAVA_HOME or PATH, when it is 17 or newer."""
    home = os.environ.get("JAVA_HOME")
    candidate = str(Path(home) / "bin" / "java") if home else shutil.which("java")
    if not candidate or not Path(candidate).exists():
        raise EmbeddedError(f"Apache Kafka needs Java 17+, and there is no java: {INSTALL_HINT}")
    out = subprocess.run(
        [candidate, "-version"], capture_output=True, text=True, timeout=60, check=False
    )
    found = re.search(r'version "(\d+)', out.stderr + out.stdout)
    if found is None or int(found.group(1)) < 17:
        version = found.group(1) if found else "unknown"
        raise EmbeddedError(
            f"Apache Kafka needs Java 17+, {candidate} is {version}: {INSTALL_HINT}"
        )
    return candidate


def missing() -> str | None:
    """Why Apache Kafka cannot run here (one line naming what to install), or None."""
    try:
        java()
    except EmbeddedError as exc:
        return str(exc)
    if shutil.which("mvn") is None and not _cache_file().exists():
        return (
            f"Apache Kafka's classpath is resolved with Maven, and there is no mvn: {INSTALL_HINT}"
        )
    return None


def cache_file(name: str) -> Path:
    """Where a resolved Maven classpath called `name` is cached."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "auth-service" / f"{name}.classpath"


def _cache_file() -> Path:
    return cache_file(f"apache-kafka-{kafka_version()}")


def maven_classpath(pom: Path, cache: Path, what: str, *properties: str) -> str:
    """The classpath `pom` describes (`-Dkey=value` `properties` passed to Maven):
    resolved from Maven Central once, then read from `cache` while every jar is
    there. EmbeddedError naming `what` without Maven or when it fails."""
    if cache.exists():
        cached = cache.read_text().strip()
        if cached and all(Path(jar).exists() for jar in cached.split(os.pathsep)):
            return cached
    mvn = shutil.which("mvn")
    if mvn is None:
        raise EmbeddedError(f"{what}'s classpath needs Maven: {INSTALL_HINT}")
    cache.parent.mkdir(parents=True, exist_ok=True)
    partial = cache.with_suffix(f".{os.getpid()}.tmp")
    done = subprocess.run(
        [mvn, "-q", "-B", "-f", str(pom), "dependency:build-classpath",
         *properties, f"-Dmdep.outputFile={partial}"],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )  # fmt: skip
    if done.returncode != 0 or not partial.exists():
        tail = (done.stdout + done.stderr).strip().splitlines()[-5:]
        raise EmbeddedError(f"mvn could not resolve {what}: {tail}")
    partial.replace(cache)
    return cache.read_text().strip()


def classpath() -> str:
    """The broker's and tools' classpath: resolved from Maven Central once (a minute
    or two the first time), then read from the cache while every jar is there."""
    return maven_classpath(POM, _cache_file(), f"Apache Kafka {kafka_version()}")


def compose_settings(compose_file: Path = COMPOSE_FILE) -> dict[str, str]:
    """docker-compose.yml's `kafka` environment as server.properties entries, as the
    apache/kafka image maps them (`_` -> `.`, `__` -> `_`, `___` -> `-`), less what
    is set per node."""
    import yaml  # noqa: PLC0415 - only the tests and bench read the compose file

    environment = yaml.safe_load(compose_file.read_text())["services"]["kafka"]["environment"]
    out: dict[str, str] = {}
    for name, value in environment.items():
        if name in _PER_NODE or not name.startswith("KAFKA_"):
            continue
        key = name.removeprefix("KAFKA_").lower()
        key = key.replace("___", "-").replace("__", "\0").replace("_", ".").replace("\0", "_")
        out[key] = str(value).lower() if isinstance(value, bool) else str(value)
    return out


def _log4j_config(path: Path) -> Path:
    path.write_text(
        "status = warn\n"
        "appender.out.type = Console\n"
        "appender.out.name = out\n"
        "appender.out.layout.type = PatternLayout\n"
        "appender.out.layout.pattern = [%d] %p %m (%c)%n\n"
        "rootLogger.level = info\n"
        "rootLogger.appenderRef.out.ref = out\n"
        # The per-request and per-log-segment chatter is noise in a test's log.
        "logger.state.name = state.change.logger\n"
        "logger.state.level = warn\n"
        "logger.log.name = kafka.log\n"
        "logger.log.level = warn\n"
        "logger.logs.name = org.apache.kafka.storage.internals.log\n"
        "logger.logs.level = warn\n"
    )
    return path


@dataclass
class KafkaNode:
    """One KRaft node (broker + controller) of an `ApacheKafka` cluster."""

    node_id: int
    port: int
    controller_port: int
    base_dir: Path
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def data_dir(self) -> Path:
        return self.base_dir / "data"

    @property
    def properties_file(self) -> Path:
        return self.base_dir / "server.properties"

    @property
    def log_path(self) -> Path:
        return self.base_dir / "server.log"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class ApacheKafka:
    """`nodes` Apache Kafka KRaft nodes on free loopback ports.

    with ApacheKafka(nodes=3) as kafka:
        kafka.bootstrap_servers          # every node's listener
        kafka.stop_node(0, kill=True)    # SIGKILL; start_node(0) brings it back
    """

    def __init__(
        self,
        nodes: int = 1,
        *,
        heap: str = "384m",
        extra: dict[str, str] | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        self._java = java()
        self._classpath = classpath()
        self.host = host
        self.heap = heap
        self.version = kafka_version()
        self.base_dir = Path(tempfile.mkdtemp(prefix="auth-apache-kafka-"))
        self.nodes = [
            KafkaNode(i + 1, free_port(host), free_port(host), self.base_dir / f"node-{i + 1}")
            for i in range(nodes)
        ]
        self.settings = {**compose_settings(), **replication_settings(nodes), **(extra or {})}
        self._log4j = _log4j_config(self.base_dir / "log4j2.properties")
        self._formatted = False

    @property
    def bootstrap_servers(self) -> str:
        return ",".join(f"{self.host}:{node.port}" for node in self.nodes)

    def properties(self, node: KafkaNode) -> dict[str, str]:
        voters = ",".join(f"{n.node_id}@{self.host}:{n.controller_port}" for n in self.nodes)
        return {
            **self.settings,
            "node.id": str(node.node_id),
            "controller.quorum.voters": voters,
            "listeners": f"PLAINTEXT://{self.host}:{node.port},"
            f"CONTROLLER://{self.host}:{node.controller_port}",
            "advertised.listeners": f"PLAINTEXT://{self.host}:{node.port}",
            "log.dirs": str(node.data_dir),
        }

    def _java_args(self, *args: str, heap: str | None = None) -> list[str]:
        memory = [f"-Xmx{heap}", "-Xms64m"] if heap else ["-Xmx256m"]
        return [
            self._java,
            *memory,
            "-XX:+UseSerialGC",
            "-XX:TieredStopAtLevel=1",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self._log4j}",
            "-cp",
            self._classpath,
            *args,
        ]

    def _format(self) -> None:
        """Write every node's properties and format its storage (once)."""
        cluster_id = self.tool("kafka.tools.StorageTool", "random-uuid").strip().splitlines()[-1]
        for node in self.nodes:
            node.base_dir.mkdir(parents=True, exist_ok=True)
            node.properties_file.write_text(
                "".join(f"{key}={value}\n" for key, value in self.properties(node).items())
            )
            self.tool(
                "kafka.tools.StorageTool", "format", "-t", cluster_id,
                "-c", str(node.properties_file),
            )  # fmt: skip
        self._formatted = True

    def tool(self, main_class: str, *args: str, timeout: float = 120.0) -> str:
        """Run one of Kafka's command-line tools (`main_class`, e.g.
        `org.apache.kafka.tools.TopicCommand`) on the broker's classpath; its stdout.
        EmbeddedError with its output when it fails."""
        done = subprocess.run(
            self._java_args(main_class, *args),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if done.returncode != 0:
            raise EmbeddedError(
                f"{main_class} {' '.join(args)} failed ({done.returncode}): "
                f"{(done.stdout + done.stderr).strip()[-2000:]}"
            )
        return done.stdout

    def start(self, timeout: float = 120.0) -> None:
        """Start every node (formatting storage the first time) and wait until the
        cluster answers with every broker registered."""
        if not self._formatted:
            self._format()
        for index in range(len(self.nodes)):
            self.start_node(index, wait=False)
        self.wait_ready(timeout)

    def start_node(self, index: int, *, wait: bool = True, timeout: float = 120.0) -> None:
        """Start node `index` (again) on its ports, with the log it had."""
        node = self.nodes[index]
        if node.running:
            raise EmbeddedError(f"Apache Kafka node {node.node_id} is already running")
        leftovers.reap()
        log = node.log_path.open("ab")
        node.proc = subprocess.Popen(
            self._java_args("kafka.Kafka", str(node.properties_file), heap=self.heap),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        leftovers.record(
            node.proc.pid,
            f"Apache Kafka node {node.node_id} on {self.host}:{node.port}",
            remove=self.base_dir,
        )
        if wait:
            self.wait_ready(timeout)

    def stop_node(self, index: int, *, kill: bool = False, timeout: float = 60.0) -> None:
        """SIGTERM (a controlled shutdown) or, with `kill`, SIGKILL node `index`."""
        node = self.nodes[index]
        proc, node.proc = node.proc, None
        if proc is None or proc.poll() is not None:
            return
        if kill:
            proc.kill()
        else:
            proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        leftovers.forget(proc.pid)

    def pause_node(self, index: int) -> None:
        """SIGSTOP node `index`: it holds its connections and answers nothing."""
        proc = self.nodes[index].proc
        if proc is not None:
            os.kill(proc.pid, signal.SIGSTOP)

    def resume_node(self, index: int) -> None:
        proc = self.nodes[index].proc
        if proc is not None:
            os.kill(proc.pid, signal.SIGCONT)

    def wait_ready(self, timeout: float = 120.0) -> None:
        """Until every running node is a registered broker of the cluster (metadata
        through a client, as an application sees it)."""
        deadline = time.monotonic() + timeout
        last: BaseException | None = None
        while time.monotonic() < deadline:
            for node in self.nodes:
                if node.proc is not None and node.proc.poll() is not None:
                    raise EmbeddedError(
                        f"Apache Kafka node {node.node_id} exited ({node.proc.returncode});"
                        f" its log: {node.log_path}\n{_tail(node.log_path)}"
                    )
            try:
                brokers = asyncio.run(_registered_brokers(self.bootstrap_servers))
            except Exception as exc:  # not up yet
                last = exc
            else:
                wanted = {n.node_id for n in self.nodes if n.running}
                if wanted <= brokers:
                    return
                last = RuntimeError(f"brokers {sorted(brokers)} of {sorted(wanted)}")
            time.sleep(0.5)
        logs = "\n".join(f"node {n.node_id}: {_tail(n.log_path)}" for n in self.nodes)
        raise EmbeddedError(f"Apache Kafka did not come up in {timeout:g}s ({last!r})\n{logs}")

    def close(self) -> None:
        for index in range(len(self.nodes)):
            self.resume_node(index)  # a paused JVM cannot act on SIGTERM
            self.stop_node(index, timeout=20)
        shutil.rmtree(self.base_dir, ignore_errors=True)

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


async def _registered_brokers(bootstrap: str) -> set[int]:
    from aiokafka.admin import AIOKafkaAdminClient  # noqa: PLC0415 - extra `events`

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
    try:  # closed even when start() fails half-way (its connections would leak)
        await admin.start()
        cluster: Any = await admin.describe_cluster()
    finally:
        with contextlib.suppress(Exception):
            await admin.close()
    return {int(broker["node_id"]) for broker in cluster["brokers"]}


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


__all__ = [
    "ApacheKafka",
    "KafkaNode",
    "classpath",
    "compose_settings",
    "java",
    "kafka_version",
    "missing",
    "replication_settings",
]
