"""Helpers for the event tests: processes, admin calls, topics, raw consumers."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import tempfile
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

import asyncpg
import grpc
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from auth_client.contract import admin_pb2_grpc
from auth_client.events import UserDeletedConsumer, UserDeletedEvent, decode_user_deleted

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

REPO = Path(__file__).resolve().parents[2]


class Proc:
    """A Python module run as a child process that prints JSON lines on stdout."""

    def __init__(self, module: str, *args: str, env: dict[str, str] | None = None) -> None:
        self.argv = [sys.executable, "-m", module, *args]
        self.env = {**os.environ, **(env or {})}
        self.lines: list[dict[str, Any]] = []
        self.text: list[str] = []  # stdout lines that are not JSON
        self._proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()
        self.stderr_path = Path(tempfile.mkstemp(prefix="proc-", suffix=".log")[1])

    @classmethod
    def script(cls, path: str, *args: str, env: dict[str, str] | None = None) -> Proc:
        """A script file (relative to the repository root) instead of a module."""
        proc = cls("-", *args, env=env)
        proc.argv = [sys.executable, path, *args]
        return proc

    async def start(self) -> Proc:
        with self.stderr_path.open("wb") as err:
            self._proc = await asyncio.create_subprocess_exec(
                *self.argv, cwd=REPO, env=self.env, stdout=asyncio.subprocess.PIPE, stderr=err
            )
        self._reader = asyncio.create_task(self._read())
        return self

    async def _read(self) -> None:
        assert self._proc is not None
        assert self._proc.stdout is not None
        async for raw in self._proc.stdout:
            line = raw.decode().strip()
            if line.startswith("{"):
                self.lines.append(json.loads(line))
            else:
                self.text.append(line)
            self._changed.set()
        self._changed.set()

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")[-4000:]

    async def wait_for(
        self, check: Callable[[list[dict[str, Any]]], bool], timeout: float = 60.0
    ) -> None:
        assert self._proc is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not check(self.lines):
            if self._proc.returncode is not None and self._reader and self._reader.done():
                raise AssertionError(f"{self.argv} exited early; stderr:\n{self.stderr()}")
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise AssertionError(
                    f"timed out; lines={self.lines[-5:]}; stderr:\n{self.stderr()}"
                )
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(remaining, 0.5))

    async def kill(self) -> None:
        """SIGKILL: no cleanup, no commit, like a crash."""
        if self._proc is not None and self._proc.returncode is None:
            self._proc.send_signal(signal.SIGKILL)
            await self._proc.wait()
        if self._reader is not None:
            await self._reader

    async def wait(self, timeout: float = 60.0) -> int:
        assert self._proc is not None
        code = await asyncio.wait_for(self._proc.wait(), timeout)
        if self._reader is not None:
            await self._reader
        return code

    async def terminate(self, timeout: float = 20.0) -> int:
        assert self._proc is not None
        if self._proc.returncode is None:
            self._proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self._proc.wait(), timeout)
            except TimeoutError:
                await self.kill()
        if self._reader is not None:
            await self._reader
        assert self._proc.returncode is not None
        return self._proc.returncode

    async def close(self) -> None:
        await self.kill()
        self.stderr_path.unlink(missing_ok=True)


@contextlib.asynccontextmanager
async def running(module: str, *args: str, **kw: Any) -> AsyncIterator[Proc]:
    proc = await Proc(module, *args, **kw).start()
    try:
        yield proc
    finally:
        await proc.close()


def received(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Events a toolkit consumer process handled (every delivery, duplicates too)."""
    return [line["received"] for line in lines if "received" in line]


@contextlib.asynccontextmanager
async def admin_stub(address: str) -> AsyncIterator[admin_pb2_grpc.UserAdminServiceStub]:
    async with grpc.aio.insecure_channel(address) as channel:
        yield admin_pb2_grpc.UserAdminServiceStub(channel)


# Bootstrap addresses of the Apache Kafka brokers the tests started: their producers
# run idempotent, as production's (KAFKA_ENABLE_IDEMPOTENCE=true).
IDEMPOTENT_BROKERS: set[str] = set()


def idempotent(bootstrap: str) -> bool:
    """Whether producers for `bootstrap` turn idempotence on (Apache Kafka; the
    embedded broker cannot: InitProducerId fails there)."""
    return bootstrap in IDEMPOTENT_BROKERS


async def create_topic(bootstrap: str, name: str, partitions: int) -> None:
    """The topic `name` and, unless it is one, its dead-letter topic `name.dlq`: as
    ops create them (docker-compose.yml's kafka-topics; Apache Kafka here runs with
    auto.create.topics.enable=false, like production)."""
    names = [name] if name.endswith(".dlq") else [name, f"{name}.dlq"]
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    try:  # closed even when start() fails half-way
        await admin.start()
        existing = set(await admin.list_topics())
        new = [
            NewTopic(topic, num_partitions=partitions, replication_factor=1)
            for topic in names
            if topic not in existing
        ]
        if new:
            await admin.create_topics(new)
        await _leaders_elected(admin, names)
    finally:
        await admin.close()


async def describe_topic(bootstrap: str, topic: str) -> dict[str, Any]:
    """The brokers' description of `topic` (its partitions with leader, replicas
    and in-sync replicas), asked through an admin client as ops would."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    try:  # closed even when start() fails half-way
        await admin.start()
        [described] = await admin.describe_topics([topic])
    finally:
        await admin.close()
    return dict(described)


async def _leaders_elected(admin: AIOKafkaAdminClient, topics: list[str]) -> None:
    """Until every partition of `topics` has a leader: Apache Kafka elects them a
    moment after CreateTopics answers, and a client that asks before gets no
    partitions (the embedded broker answers at once)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while True:
        described = await admin.describe_topics(topics)
        if all(
            t["error_code"] == 0
            and t["partitions"]
            and all(p["leader"] >= 0 for p in t["partitions"])
            for t in described
        ):
            return
        if loop.time() > deadline:
            raise AssertionError(f"topics {topics} have no leaders after 30 s: {described}")
        await asyncio.sleep(0.1)


class Collector:
    """An in-process raw consumer (own group) that records every message of a topic."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=bootstrap,
            group_id=f"collector-{uuid.uuid4().hex[:8]}",
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            # As docs/events.md tells a plain aiokafka consumer: after a leader
            # moved, aiokafka 0.14 resets an uncommitted partition at the old
            # leader until its metadata is refreshed (5 min by default).
            metadata_max_age_ms=5_000,
        )
        self.records: list[Any] = []
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Self:
        await self.consumer.start()
        self._task = asyncio.create_task(self._run())
        return self

    async def _run(self) -> None:
        async for record in self.consumer:
            self.records.append(record)

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.consumer.stop()

    def user_ids(self) -> list[str]:
        return [decode_user_deleted(r.value).user_id for r in self.records]

    def event_ids(self) -> list[str]:
        return [decode_user_deleted(r.value).event_id for r in self.records]


async def read_topic(bootstrap: str, topic: str) -> list[Any]:
    """Every record now in `topic`, read from the start of each partition to its end
    by a consumer of no group: what the brokers hold, whatever a group's consumer
    has or has not fetched yet."""
    described = await describe_topic(bootstrap, topic)
    numbers = sorted(int(p["partition"]) for p in described["partitions"])
    partitions = [TopicPartition(topic, number) for number in numbers]
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:  # closed even when start() fails half-way
        await consumer.start()
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        records: list[Any] = []
        for tp, end in ends.items():
            while await consumer.position(tp) < end:
                batches = await consumer.getmany(tp, timeout_ms=1000)
                for batch in batches.values():
                    records.extend(batch)
        return records
    finally:
        await consumer.stop()


async def outbox_rows(database_url: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(database_url)
    try:
        return await conn.fetch(
            "SELECT id, event_id, event_type, partition_key, payload, published_at, attempts"
            " FROM outbox ORDER BY id"
        )
    finally:
        await conn.close()


def group() -> str:
    """A consumer group of its own (a test never shares offsets with another)."""
    return f"g-{uuid.uuid4().hex[:8]}"


@contextlib.asynccontextmanager
async def consuming(
    handler: Callable[[UserDeletedEvent], Awaitable[None]],
    bootstrap: str,
    topic: str,
    group_id: str | None = None,
    **kw: Any,
) -> AsyncIterator[UserDeletedConsumer]:
    """A real UserDeletedConsumer running `handler` on `topic` (dead letters to
    `<topic>.dlq`) until the block ends."""
    consumer = UserDeletedConsumer(
        handler,
        bootstrap_servers=bootstrap,
        group_id=group_id or group(),
        topic=topic,
        dlq_topic=f"{topic}.dlq",
        session_timeout_ms=6000,
        heartbeat_interval_ms=1000,
        **kw,
    )
    async with consumer:
        task = asyncio.create_task(consumer.run())
        try:
            yield consumer
        finally:
            consumer.stop()
            await asyncio.wait_for(task, 30)
