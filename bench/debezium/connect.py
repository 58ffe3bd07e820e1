"""Debezium's outbox event router in Kafka Connect standalone, as ops would run it:
one JVM (`org.apache.kafka.connect.cli.ConnectStandalone`) with Debezium's
PostgreSQL connector (pgoutput, no extension) and `EventRouter` mapping our `outbox`
table onto the `user_deleted` contract, configured by properties files written here.

- **The classpath** is `pom.xml` beside this file, resolved once with Maven and
  cached under ~/.cache/auth-service (as `auth_service.local.apache_kafka` does for
  the broker). Connect is the broker's Kafka version (`kafka_version()`, passed to
  Maven), Debezium the pom's.
- **Ports**: Connect's REST listener on a free loopback port (never 8083).
- **The heap** is bounded (`heap`, default 512 MiB); the JVM's other defaults (G1)
  are left as a deployment would have them.

Needs Java 17+ and Maven: `apache_kafka.missing()` says what to install.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from auth_client.contract import (
    CONTENT_TYPE,
    HEADER_CONTENT_TYPE,
    HEADER_EVENT_ID,
    HEADER_EVENT_TYPE,
    HEADER_TRACEPARENT,
)
from auth_service.local import leftovers
from auth_service.local.apache_kafka import (
    cache_file,
    java,
    kafka_version,
    maven_classpath,
)
from auth_service.local.embedded import EmbeddedError, free_port

POM = Path(__file__).with_name("pom.xml")
CONNECTOR = "auth-outbox"


def debezium_version() -> str:
    """The Debezium version the pom pins."""
    found = re.search(r"<debezium\.version>([^<]+)</debezium\.version>", POM.read_text())
    if found is None:  # pragma: no cover - the checked-in pom has it
        raise EmbeddedError(f"{POM}: no <debezium.version>")
    return found.group(1)


def _cache_file() -> Path:
    return cache_file(f"debezium-{debezium_version()}-connect-{kafka_version()}")


def cached() -> bool:
    """Whether the classpath was resolved before (then Maven is not needed)."""
    return _cache_file().exists()


def classpath() -> str:
    """Connect's and Debezium's classpath: resolved from Maven Central once (under a
    minute), then read from the cache while every jar is there."""
    return maven_classpath(
        POM,
        _cache_file(),
        f"Debezium {debezium_version()}",
        f"-Dkafka.version={kafka_version()}",
    )


@dataclass(frozen=True)
class Source:
    """The PostgreSQL database (and its `outbox` table) the connector reads."""

    host: str
    port: int
    database: str
    slot: str
    user: str = "postgres"


def outbox_connector(source: Source, topic: str, **overrides: str) -> dict[str, str]:
    """The connector's properties: our `outbox` table through EventRouter onto
    `topic`, each event as the relay publishes it (key = `partition_key`, value =
    the `payload` bytes as they are, headers `event-id`, `event-type`,
    `content-type`, `traceparent`). `overrides` replace or add properties."""
    return {
        "name": CONNECTOR,
        "connector.class": "io.debezium.connector.postgresql.PostgresConnector",
        "tasks.max": "1",
        "database.hostname": source.host,
        "database.port": str(source.port),
        "database.user": source.user,
        "database.password": "",
        "database.dbname": source.database,
        "topic.prefix": "auth",
        "plugin.name": "pgoutput",
        "slot.name": source.slot,
        # Kept when Connect stops (as in production: a restart goes on from it); the
        # bench drops it at the end.
        "slot.drop.on.stop": "false",
        "publication.name": f"{source.slot}_pub",
        "publication.autocreate.mode": "filtered",
        "table.include.list": "public.outbox",
        # Rows written before the connector started are not events for it: the
        # relay's contract (publish what commits while it runs, and the backlog)
        # is compared from the slot's creation on, with no snapshot of old rows.
        "snapshot.mode": "no_data",
        "tombstones.on.delete": "false",
        # The payload column is bytea: handed over as bytes and written as they are.
        "binary.handling.mode": "bytes",
        "key.converter": "org.apache.kafka.connect.storage.StringConverter",
        "value.converter": "org.apache.kafka.connect.converters.ByteArrayConverter",
        "transforms": "outbox,contenttype",
        "transforms.outbox.type": "io.debezium.transforms.outbox.EventRouter",
        "transforms.outbox.table.field.event.id": "event_id",
        "transforms.outbox.table.field.event.key": "partition_key",
        "transforms.outbox.table.field.event.payload": "payload",
        "transforms.outbox.route.by.field": "event_type",
        "transforms.outbox.route.topic.replacement": topic,
        "transforms.outbox.table.fields.additional.placement": (
            f"event_id:header:{HEADER_EVENT_ID},event_type:header:{HEADER_EVENT_TYPE},"
            f"traceparent:header:{HEADER_TRACEPARENT}"
        ),
        # The relay's constant header: Kafka's own SMT adds it.
        "transforms.contenttype.type": "org.apache.kafka.connect.transforms.InsertHeader",
        "transforms.contenttype.header": HEADER_CONTENT_TYPE,
        "transforms.contenttype.value.literal": CONTENT_TYPE,
        **overrides,
    }


def _log4j_config(path: Path) -> Path:
    path.write_text(
        "status = warn\n"
        "appender.out.type = Console\n"
        "appender.out.name = out\n"
        "appender.out.layout.type = PatternLayout\n"
        "appender.out.layout.pattern = [%d] %p %m (%c)%n\n"
        "rootLogger.level = info\n"
        "rootLogger.appenderRef.out.ref = out\n"
        # Every client's full configuration, printed at each start: noise here.
        "logger.config.name = org.apache.kafka.common.config.AbstractConfig\n"
        "logger.config.level = warn\n"
    )
    return path


class KafkaConnect:
    """One Kafka Connect standalone worker running `connector` (properties).

    with KafkaConnect(bootstrap, outbox_connector(source, "user_deleted")) as connect:
        connect.pid                  # the JVM, for /proc CPU accounting
        connect.stop(); connect.connector["poll.interval.ms"] = "10"; connect.start()
    """

    def __init__(
        self, bootstrap_servers: str, connector: dict[str, str], *, heap: str = "512m"
    ) -> None:
        self._java = java()
        self._classpath = classpath()
        self.bootstrap_servers = bootstrap_servers
        self.connector = connector
        self.heap = heap
        self.rest_port = free_port()
        self.base_dir = Path(tempfile.mkdtemp(prefix="auth-connect-"))
        self.log_path = self.base_dir / "connect.log"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise EmbeddedError("Kafka Connect is not running")
        return self._proc.pid

    def _write(self, name: str, properties: dict[str, str]) -> Path:
        path = self.base_dir / name
        path.write_text("".join(f"{key}={value}\n" for key, value in properties.items()))
        return path

    def worker_properties(self) -> dict[str, str]:
        return {
            "bootstrap.servers": self.bootstrap_servers,
            "listeners": f"http://127.0.0.1:{self.rest_port}",
            "offset.storage.file.filename": str(self.base_dir / "offsets"),
            "key.converter": "org.apache.kafka.connect.storage.StringConverter",
            "value.converter": "org.apache.kafka.connect.converters.ByteArrayConverter",
            # Plugins are on the classpath: found through their service manifests.
            "plugin.discovery": "service_load",
        }

    def start(self) -> None:
        """Start the JVM (the connector's task starts inside it; `wait_running`)."""
        worker = self._write("worker.properties", self.worker_properties())
        connector = self._write("connector.properties", self.connector)
        log4j = _log4j_config(self.base_dir / "log4j2.properties")
        leftovers.reap()
        log = self.log_path.open("ab")
        self._proc = subprocess.Popen(
            [self._java, f"-Xmx{self.heap}", "-Djava.awt.headless=true",
             f"-Dlog4j2.configurationFile={log4j}", "-cp", self._classpath,
             "org.apache.kafka.connect.cli.ConnectStandalone", str(worker), str(connector)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        log.close()
        leftovers.record(
            self._proc.pid,
            f"Kafka Connect (Debezium) on port {self.rest_port}",
            remove=self.base_dir,
        )

    def status(self) -> dict[str, Any] | None:
        """The connector's status from the REST API, or None while it does not answer."""
        url = f"http://127.0.0.1:{self.rest_port}/connectors/{self.connector['name']}/status"
        try:
            with urllib.request.urlopen(url, timeout=2) as reply:
                found: dict[str, Any] = json.loads(reply.read())
                return found
        except (urllib.error.URLError, OSError, ValueError):
            return None

    def wait_running(self, timeout: float = 180.0) -> None:
        """Until the connector's task is RUNNING; EmbeddedError with the log's tail
        when the JVM exits, a task fails or `timeout` passes."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc is None or self._proc.poll() is not None:
                raise EmbeddedError(f"Kafka Connect exited; its log:\n{self.tail()}")
            status = self.status()
            tasks = (status or {}).get("tasks", [])
            states = {task.get("state") for task in tasks}
            if "FAILED" in states:
                trace = " ".join(str(t.get("trace", "")) for t in tasks)[:2000]
                raise EmbeddedError(f"the Debezium task failed: {trace}")
            if states == {"RUNNING"}:
                return
            time.sleep(0.2)
        raise EmbeddedError(f"Kafka Connect's task not running in {timeout:g}s:\n{self.tail()}")

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM (the task commits its offsets), then SIGKILL after `timeout`. A
        later `start()` goes on from those offsets and the slot."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        os.kill(proc.pid, signal.SIGCONT)  # a stopped JVM cannot act on SIGTERM
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
        try:
            self.start()
            self.wait_running()
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
