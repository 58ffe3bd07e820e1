"""Deletion events on a 3-node Apache Kafka cluster (replication 3,
min.insync.replicas=2, idempotent producer) while brokers fail (#26 item 4): every
acknowledged deletion's event reaches an independent consumer, and a duplicate only
where the relay retried a send.

Real processes throughout: three KRaft JVMs, PostgreSQL, a server with its relay,
and a raw consumer of its own group."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import shlex
import uuid
from collections import Counter
from typing import TYPE_CHECKING, Self

import asyncpg
import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from auth_client.contract import decode_user_deleted
from auth_client.events import UserDeletedConsumer, UserDeletedEvent
from auth_service.api.server import AuthServer
from auth_service.events.relay import Relay
from auth_service.events.relay_config import RelayConfig
from auth_service.local.apache_kafka import ApacheKafka
from auth_service.local.apache_kafka import missing as apache_kafka_missing
from auth_service.local.embedded import EmbeddedError
from tests.conftest import _missing, eventually
from tests.events.conftest import event_settings
from tests.events.support import (
    IDEMPOTENT_BROKERS,
    REPO,
    Collector,
    admin_stub,
    describe_topic,
    outbox_rows,
)
from tests.events.test_consumer_rebalance import make_event
from tests.events.test_consumer_rebalance import produce as produce_on
from tests.helpers import create_user, delete_user

if TYPE_CHECKING:
    from collections.abc import Iterator

# Each test here fails by its own deadlines (eventually(), at most 180 s) before
# pytest-timeout's: a test interrupted by that signal mid-way through aiokafka's C
# code once crashed the whole run (a segfault in the next test's set-up).
pytestmark = [pytest.mark.slow, pytest.mark.timeout(400)]

DELETIONS = 240


@pytest.fixture(scope="module")
def cluster() -> Iterator[ApacheKafka]:
    problem = apache_kafka_missing()
    if problem is not None:
        _missing("Apache Kafka", EmbeddedError(problem))
    kafka = ApacheKafka(nodes=3, heap="256m")
    try:
        kafka.start(timeout=180)
    except EmbeddedError as exc:
        kafka.close()
        _missing("a 3-node Apache Kafka cluster", exc)
    IDEMPOTENT_BROKERS.add(kafka.bootstrap_servers)
    try:
        yield kafka
    finally:
        kafka.close()


@pytest.fixture(autouse=True)
def _quiet_aiokafka() -> Iterator[None]:
    """aiokafka logs every refused connection to a stopped broker (thousands of
    lines per test here), with tracebacks; the relay's and the tests' own lines are
    what these tests read."""
    logger = logging.getLogger("aiokafka")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


async def _true(value: bool) -> bool:
    return value


async def _replicated_topic(bootstrap: str, name: str, partitions: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    try:  # closed even when start() fails half-way
        await admin.start()
        await admin.create_topics([NewTopic(name, partitions, 3)])
        for _ in range(300):
            [described] = await admin.describe_topics([name])
            parts = described["partitions"]
            if parts and all(p["leader"] >= 0 and len(p["isr"]) == 3 for p in parts):
                return
            await asyncio.sleep(0.1)
        raise AssertionError(f"{name}: replicas never all in sync: {described}")
    finally:
        await admin.close()


async def _leader_of(bootstrap: str, topic: str, partition: int) -> int:
    described = await describe_topic(bootstrap, topic)
    return int(next(p["leader"] for p in described["partitions"] if p["partition"] == partition))


async def _delete_stream(admin: object, users: list[str], acknowledged: list[str]) -> None:
    """Delete every user in turn, as fast as DeleteUser answers; record the ones
    the server acknowledged (a deletion that fails is not promised an event)."""
    for user_id in users:
        try:
            await delete_user(admin, user_id)  # type: ignore[arg-type]
        except Exception:
            continue
        acknowledged.append(user_id)
        await asyncio.sleep(0.02)


async def _check_every_acknowledged_event_arrived(
    database_url: str, collector: Collector, acknowledged: list[str]
) -> None:
    def delivered() -> set[str]:
        return {decode_user_deleted(r.value).user_id for r in collector.records}

    try:
        await eventually(lambda: _true(set(acknowledged) <= delivered()), timeout=180)
    except AssertionError:
        rows = await outbox_rows(database_url)
        missing = set(acknowledged) - delivered()
        unpublished = [r for r in rows if r["published_at"] is None]
        raise AssertionError(
            f"{len(missing)} of {len(acknowledged)} acknowledged deletions never arrived;"
            f" {len(unpublished)} outbox rows unpublished (attempts"
            f" {sorted({r['attempts'] for r in unpublished})})"
        ) from None
    counts = Counter(decode_user_deleted(r.value).event_id for r in collector.records)
    duplicated = {event_id for event_id, n in counts.items() if n > 1}
    retried = {str(r["event_id"]) for r in await outbox_rows(database_url) if r["attempts"] > 0}
    # A duplicate only where the relay sent again after an unacknowledged send.
    assert duplicated <= retried, (duplicated, retried)


class _Deletions:
    """A server with its relay on the cluster, an independent consumer of its topic
    (3 partitions, replication 3) and DELETIONS users to delete in a stream."""

    def __init__(self, database_url: str, cluster: ApacheKafka) -> None:
        self.database_url = database_url
        self.cluster = cluster
        self.topic = f"t-{uuid.uuid4().hex[:12]}"
        self.acknowledged: list[str] = []
        self._stack = contextlib.AsyncExitStack()
        self._stream: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Self:
        bootstrap = self.cluster.bootstrap_servers
        await _replicated_topic(bootstrap, self.topic, 3)
        settings = event_settings(self.database_url, bootstrap, self.topic, relay_batch_size=20)
        server = await self._stack.enter_async_context(AuthServer(settings))
        self._admin = await self._stack.enter_async_context(admin_stub(server.address))
        self.collector = await self._stack.enter_async_context(Collector(bootstrap, self.topic))
        self.users = [(await create_user(self._admin)).id for _ in range(DELETIONS)]
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()

    async def node_leading(self, partition: int) -> tuple[int, int]:
        """(index in cluster.nodes, node id) of `partition`'s leader."""
        leader = await _leader_of(self.cluster.bootstrap_servers, self.topic, partition)
        return next(i for i, n in enumerate(self.cluster.nodes) if n.node_id == leader), leader

    async def start(self, *, wait_for_a_third: bool = True) -> None:
        """Start deleting; with `wait_for_a_third`, return once a third is done."""
        self._stream = asyncio.create_task(
            _delete_stream(self._admin, self.users, self.acknowledged)
        )
        if wait_for_a_third:
            await eventually(lambda: _true(len(self.acknowledged) >= DELETIONS // 3), timeout=60)

    async def stream_ended(self) -> None:
        assert self._stream is not None
        await self._stream

    async def finish(self) -> None:
        """Let the stream end, then check every acknowledged deletion's event."""
        await self.stream_ended()
        await _check_every_acknowledged_event_arrived(
            self.database_url, self.collector, self.acknowledged
        )


async def test_the_partition_leader_killed_mid_stream_loses_no_acknowledged_deletion(
    database_url: str, cluster: ApacheKafka
) -> None:
    async with _Deletions(database_url, cluster) as run:
        index, leader = await run.node_leading(0)
        await run.start()
        await asyncio.to_thread(cluster.stop_node, index, kill=True)  # SIGKILL the leader

        async def moved() -> bool:  # the cluster elected another leader meanwhile
            try:
                return await _leader_of(cluster.bootstrap_servers, run.topic, 0) not in {
                    leader,
                    -1,
                }
            except Exception:  # a metadata request met the dead node
                return False

        await eventually(moved, timeout=60)
        await run.stream_ended()
        await asyncio.to_thread(cluster.start_node, index)  # back, with its log
        await run.finish()
    assert len(run.acknowledged) == DELETIONS  # deletions never wait for Kafka


@pytest.mark.xfail(
    strict=False,
    reason="open in #26: in 2 of 4 fresh-clone CI runs (under full-suite load) the events of"
    " this stream had not all arrived 60+ s after the broker resumed; not reproduced alone,"
    " cause not found",
)
async def test_a_broker_frozen_longer_than_the_request_timeout_loses_no_deletion(
    database_url: str, cluster: ApacheKafka
) -> None:
    # Requests time out after 3 s; the broker stays frozen for 12, longer than the
    # controller waits for its heartbeats (broker.session.timeout.ms, 9 s).
    async with _Deletions(database_url, cluster) as run:
        index, _ = await run.node_leading(1)
        await run.start()
        cluster.pause_node(index)  # SIGSTOP: connections open, nothing answered
        try:
            await asyncio.sleep(12)
        finally:
            cluster.resume_node(index)
        await run.finish()


TOOLS = {
    "kafka-topics.sh": "org.apache.kafka.tools.TopicCommand",
    "kafka-consumer-groups.sh": "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand",
}


def _guide_commands(heading: str) -> list[str]:
    """The commands of the first ```sh block under `heading` in docs/operations.md,
    continuation lines joined."""
    text = (REPO / "docs" / "operations.md").read_text()
    section = text.split(f"\n{heading}\n", 1)[1]
    block = section.split("```sh\n", 1)[1].split("```", 1)[0]
    return [line.strip() for line in re.sub(r"\\\n\s*", " ", block).splitlines() if line.strip()]


async def test_the_guides_topic_commands_create_the_topics_the_relay_checks_for(
    database_url: str, cluster: ApacheKafka
) -> None:
    """docs/operations.md, "Kafka topics": its commands run as written (Kafka's own
    tools on the broker's classpath, KAFKA:9092 replaced by the cluster) and create
    what it says; a relay then finds them in place."""
    first = cluster.bootstrap_servers.split(",")[0]
    commands = _guide_commands("### Kafka topics")
    assert len(commands) == 2
    for command in commands:
        program, *args = shlex.split(command.replace("KAFKA:9092", first))
        await asyncio.to_thread(cluster.tool, TOOLS[program], *args)
    for topic in ("user_deleted", "user_deleted.dlq"):
        described = await asyncio.to_thread(
            cluster.tool, TOOLS["kafka-topics.sh"], "--bootstrap-server", first,
            "--describe", "--topic", topic,
        )  # fmt: skip
        summary = described.splitlines()[0]
        assert "PartitionCount: 6" in summary, described
        assert "ReplicationFactor: 3" in summary, described
        assert "min.insync.replicas=2" in summary, described

    config = RelayConfig.from_settings(
        event_settings(database_url, cluster.bootstrap_servers, "user_deleted")
    )
    async with Relay(config) as relay:
        await eventually(lambda: _true(relay.topics.checks > 0), timeout=30)
        assert relay.topics.last is not None
        assert relay.topics.last.publishable
        assert not relay.topics.last.under_replicated


async def test_the_guides_lag_command_shows_a_cleanup_groups_lag(
    cluster: ApacheKafka,
) -> None:
    """docs/operations.md, "Consumer lag": the command runs as written against a
    group of UserDeletedConsumers and shows its lag, 0 once every event is handled."""
    first = cluster.bootstrap_servers.split(",")[0]
    topic = f"t-{uuid.uuid4().hex[:12]}"
    await _replicated_topic(bootstrap=cluster.bootstrap_servers, name=topic, partitions=2)
    await _replicated_topic(cluster.bootstrap_servers, f"{topic}.dlq", 2)
    events = [make_event() for _ in range(10)]
    for index, event in enumerate(events):
        await produce_on(cluster.bootstrap_servers, topic, index % 2, event)
    [command] = _guide_commands("### Consumer lag")
    handled: list[str] = []

    async def handler(event: UserDeletedEvent) -> None:
        handled.append(event.event_id)

    group = f"messaging-cleanup-{uuid.uuid4().hex[:6]}"
    async with UserDeletedConsumer(
        handler, bootstrap_servers=cluster.bootstrap_servers, group_id=group, topic=topic
    ) as consumer:
        run = asyncio.create_task(consumer.run())
        await eventually(lambda: _true(len(set(handled)) == len(events)), timeout=60)
        consumer.stop()
        await run
    program, *args = shlex.split(
        command.replace("KAFKA:9092", first).replace("messaging-cleanup", group)
    )
    out = await asyncio.to_thread(cluster.tool, TOOLS[program], *args)
    rows = [line.split() for line in out.splitlines() if line.startswith(group)]
    assert len(rows) == 2, out  # one per partition
    header = next(line.split() for line in out.splitlines() if "LAG" in line)
    lag = header.index("LAG")
    assert all(row[lag] == "0" for row in rows), out


async def test_a_rolling_restart_of_every_broker_loses_no_acknowledged_deletion(
    database_url: str, cluster: ApacheKafka
) -> None:
    async with _Deletions(database_url, cluster) as run:
        await run.start(wait_for_a_third=False)
        for index in range(len(cluster.nodes)):  # one at a time, as an upgrade does
            await asyncio.to_thread(cluster.stop_node, index)  # SIGTERM: controlled shutdown
            await asyncio.to_thread(cluster.start_node, index)
        await run.finish()
    assert len(run.acknowledged) == DELETIONS


async def _relay_transaction_age(database_url: str) -> float:
    """Seconds the relay's oldest open transaction has been open (0 when none): how
    long it holds the outbox rows it claimed."""
    conn = await asyncpg.connect(database_url)
    try:
        age = await conn.fetchval(
            "SELECT coalesce(max(extract(epoch FROM now() - xact_start)), 0)"
            " FROM pg_stat_activity WHERE application_name = 'auth-service-relay'"
            " AND xact_start IS NOT NULL AND pid <> pg_backend_pid()"
        )
    finally:
        await conn.close()
    return float(age)


async def test_the_relay_through_a_lost_quorum_backs_off_holds_no_rows_and_drains(
    database_url: str, cluster: ApacheKafka, caplog: pytest.LogCaptureFixture
) -> None:
    """Two of three brokers down (no controller quorum, fewer in-sync replicas than
    min.insync.replicas) for 25 s: deletions go on, the relay says so once per kind
    of failure, never keeps a transaction (and with it claimed outbox rows) open
    longer than one send's bound, and drains the backlog when the brokers return."""
    caplog.set_level(logging.INFO, logger="auth_service.events.relay")
    bootstrap = cluster.bootstrap_servers
    topic = f"t-{uuid.uuid4().hex[:12]}"
    await _replicated_topic(bootstrap, topic, 3)
    settings = event_settings(
        database_url, bootstrap, topic, relay_batch_size=20, relay_max_backoff_s=1.0
    )
    bound = settings.kafka_request_timeout_s * 2 + 5  # the publisher's whole-batch bound
    async with (
        AuthServer(settings) as server,
        admin_stub(server.address) as admin,
        Collector(bootstrap, topic) as collector,
    ):
        users = [(await create_user(admin)).id for _ in range(60)]
        for user_id in users[:10]:
            await delete_user(admin, user_id)
        await eventually(lambda: _true(len(collector.records) >= 10), timeout=60)

        for index in (1, 2):
            await asyncio.to_thread(cluster.stop_node, index, kill=True)
        before = len(caplog.records)
        oldest = 0.0
        loop = asyncio.get_running_loop()
        outage_ends = loop.time() + 25
        pending = users[10:]
        while loop.time() < outage_ends:
            if pending:
                await delete_user(admin, pending.pop())  # deletions never wait for Kafka
            oldest = max(oldest, await _relay_transaction_age(database_url))
            await asyncio.sleep(0.2)
        assert not pending
        during = [
            r.getMessage()
            for r in caplog.records[before:]
            if r.name == "auth_service.events.relay" and r.levelno >= logging.WARNING
        ]
        assert during, "the relay said nothing about the outage"
        kinds = Counter(message.split(":")[1].split(" at ")[0] for message in during)
        assert all(n == 1 for n in kinds.values()), during  # once per kind, not per retry
        assert oldest < bound, f"a relay transaction stayed open {oldest:.1f}s"

        for index in (1, 2):
            await asyncio.to_thread(cluster.start_node, index)
        await _check_every_acknowledged_event_arrived(database_url, collector, users)
