"""Deletion events on a 3-node Apache Kafka cluster (replication 3,
min.insync.replicas=2, idempotent producer) while brokers fail (#26 item 4): every
acknowledged deletion's event reaches an independent consumer, and a duplicate only
where the relay retried a send.

Real processes throughout: three KRaft JVMs, PostgreSQL, a server with its relay,
and a raw consumer of its own group."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import shlex
import shutil
import subprocess
import uuid
from collections import Counter
from typing import TYPE_CHECKING, Any, Self

import asyncpg
import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError
from aiokafka.structs import TopicPartition

from auth_client.contract import decode_user_deleted
from auth_client.events import RetryPolicy, UserDeletedConsumer, UserDeletedEvent
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
    read_topic,
    received,
)
from tests.events.support import running as running_proc
from tests.events.test_consumer_rebalance import committed, make_event, running
from tests.events.test_consumer_rebalance import produce as produce_on
from tests.helpers import create_user, delete_user

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterator

# Each test here fails by its own deadlines (eventually(), at most 180 s) before
# pytest-timeout's: a test interrupted by that signal mid-way through aiokafka's C
# code once crashed the whole run (a segfault in the next test's set-up).
pytestmark = [pytest.mark.slow, pytest.mark.timeout(400)]

DELETIONS = 240
OUTAGE_S = 60  # the lost quorum's length
GROUP_PARTITIONS = 6
SESSION_S = 10
REVOKE_S = 2.0
SLOW_HANDLER_S = 20.0


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


async def _why_missing(
    database_url: str, collector: Collector, missing: set[str], bootstrap: str, topic: str
) -> str:
    """Where the missing events are: still in the outbox, in the topic but not
    fetched by the collector (and where it stands), or nowhere."""
    rows = {r["partition_key"]: r for r in await outbox_rows(database_url)}
    unpublished = {u for u in missing if rows.get(u) is None or rows[u]["published_at"] is None}
    fetched = Counter(r.partition for r in collector.records)
    consumer = collector.consumer
    positions = {tp.partition: await _position(consumer, tp) for tp in consumer.assignment()}
    in_topic = await read_topic(bootstrap, topic)
    held = {decode_user_deleted(r.value).user_id: r.partition for r in in_topic}
    return (
        f"{len(missing)} acknowledged deletions never arrived: {len(unpublished)} unpublished"
        f" in the outbox (attempts {sorted({rows[u]['attempts'] for u in unpublished if u in rows})}),"
        f" {len(missing & held.keys())} in the topic (partitions"
        f" {sorted(Counter(held[u] for u in missing & held.keys()).items())}),"
        f" {len(missing - unpublished - held.keys())} published but not in the topic."
        f" The collector fetched {sorted(fetched.items())} per partition, the topic holds"
        f" {sorted(Counter(r.partition for r in in_topic).items())}; its positions {positions}"
    )


async def _check_every_acknowledged_event_arrived(
    database_url: str,
    collector: Collector,
    acknowledged: list[str],
    bootstrap: str,
    topic: str,
    *,
    before_the_collector: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Every acknowledged deletion's event is in the topic (read from the start by
    a consumer of no group), with duplicates only where the relay sent again; then
    the independent group consumer has received them all."""
    wanted = set(acknowledged)
    in_topic: list[Any] = []

    async def published() -> bool:
        try:
            in_topic[:] = await asyncio.wait_for(read_topic(bootstrap, topic), 30)
        except (KafkaError, TimeoutError):  # brokers just restarted: "node not ready"
            return False
        return wanted <= {decode_user_deleted(r.value).user_id for r in in_topic}

    try:
        await eventually(published, timeout=180, interval=2.0)
    except pytest.fail.Exception:  # what eventually() raises
        held = {decode_user_deleted(r.value).user_id for r in in_topic}
        raise AssertionError(
            await _why_missing(database_url, collector, wanted - held, bootstrap, topic)
        ) from None
    counts = Counter(decode_user_deleted(r.value).event_id for r in in_topic)
    duplicated = {event_id for event_id, n in counts.items() if n > 1}
    retried = {str(r["event_id"]) for r in await outbox_rows(database_url) if r["attempts"] > 0}
    # A duplicate only where the relay sent again after an unacknowledged send.
    assert duplicated <= retried, (duplicated, retried)
    if before_the_collector is not None:
        await before_the_collector()

    def delivered() -> set[str]:
        return {decode_user_deleted(r.value).user_id for r in collector.records}

    try:
        await eventually(lambda: _true(wanted <= delivered()), timeout=60)
    except pytest.fail.Exception:
        why = await _why_missing(database_url, collector, wanted - delivered(), bootstrap, topic)
        raise AssertionError(why) from None


class _Deletions:
    """A server with its relay on the cluster, two independent consumers of its
    topic (3 partitions, replication 3): a plain aiokafka one and a downstream
    team's UserDeletedConsumer; and DELETIONS users to delete in a stream."""

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
        self.cleaned: set[str] = set()

        async def clean_up(event: UserDeletedEvent) -> None:
            self.cleaned.add(event.user_id)

        cleanup = UserDeletedConsumer(
            clean_up,
            bootstrap_servers=bootstrap,
            group_id=f"cleanup-{uuid.uuid4().hex[:6]}",
            topic=self.topic,
            dlq_topic=f"{self.topic}.dlq",
        )
        await self._stack.enter_async_context(running(cleanup))
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
            self.database_url,
            self.collector,
            self.acknowledged,
            self.cluster.bootstrap_servers,
            self.topic,
            before_the_collector=self._all_cleaned_up,
        )

    async def _all_cleaned_up(self) -> None:
        """What a downstream team runs (it commits: a rebalance resumes where it was)
        handles every acknowledged deletion."""
        await eventually(lambda: _true(set(self.acknowledged) <= self.cleaned), timeout=120)


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
    min.insync.replicas) for a minute: deletions go on, the relay says so once per kind
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
        outage_ends = loop.time() + OUTAGE_S
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
        await _check_every_acknowledged_event_arrived(
            database_url, collector, users, bootstrap, topic
        )


def received_ids(lines: list[dict[str, Any]]) -> list[str]:
    return [str(r["event_id"]) for r in received(lines)]


async def _first(seen: list[str]) -> None:
    await eventually(lambda: _true(bool(seen)), timeout=60)


async def test_a_group_of_three_over_six_partitions_survives_a_kill_a_join_and_a_slow_handler(
    cluster: ApacheKafka,
) -> None:
    """Three UserDeletedConsumers share six partitions: one (a process) is SIGKILLed
    mid-stream, a fourth joins while another's handler has been running longer than
    the session timeout. Every event is handled (at least once: ids are the dedupe
    key), the joiner gets partitions within the revoke bound plus the group's
    rounds, and at the end every partition's committed offset is its end."""
    bootstrap = cluster.bootstrap_servers
    topic, g = f"t-{uuid.uuid4().hex[:12]}", f"cleanup-{uuid.uuid4().hex[:6]}"
    await _replicated_topic(bootstrap, topic, GROUP_PARTITIONS)
    await _replicated_topic(bootstrap, f"{topic}.dlq", 1)
    produced: list[str] = []
    per_partition = Counter[int]()

    async def burst(n: int) -> None:
        events = [make_event() for _ in range(n)]
        for index, event in enumerate(events):
            await produce_on(bootstrap, topic, index % GROUP_PARTITIONS, event)
            per_partition[index % GROUP_PARTITIONS] += 1
        produced.extend(e.event_id for e in events)

    seen: dict[str, list[str]] = {"b": [], "c": [], "d": []}
    slow, slow_started = asyncio.Event(), asyncio.Event()

    def recording(name: str) -> Callable[[UserDeletedEvent], Awaitable[None]]:
        async def handle(event: UserDeletedEvent) -> None:
            if name == "c" and slow.is_set() and not slow_started.is_set():
                slow_started.set()  # longer than the session: heartbeats go on
                await asyncio.sleep(SLOW_HANDLER_S)
            seen[name].append(event.event_id)

        return handle

    def member(name: str) -> UserDeletedConsumer:
        return UserDeletedConsumer(
            recording(name),
            bootstrap_servers=bootstrap,
            group_id=g,
            topic=topic,
            dlq_topic=f"{topic}.dlq",
            session_timeout_ms=SESSION_S * 1000,  # also aiokafka's rebalance timeout
            heartbeat_interval_ms=500,
            revoke_timeout_s=REVOKE_S,
        )

    def handled() -> set[str]:
        return {*received_ids(doomed.lines), *(i for ids in seen.values() for i in ids)}

    async def all_handled() -> None:
        await eventually(lambda: _true(handled() >= set(produced)), timeout=120)

    args = ("toolkit", "--bootstrap", bootstrap, "--topic", topic, "--group", g)
    b, c, d = member("b"), member("c"), member("d")
    async with running_proc("tests.events.proc_consumer", *args) as doomed:
        await doomed.wait_for(lambda lines: any("ready" in line for line in lines))
        async with running(b), running(c):
            await burst(60)
            await all_handled()
            # A crash mid-stream: what it handled but had not committed goes again
            # to the partitions' next owners once its session expires.
            before = len(received_ids(doomed.lines))
            sending = asyncio.create_task(burst(120))
            await doomed.wait_for(lambda lines: len(received_ids(lines)) > before)
            await doomed.kill()
            await sending
            await all_handled()

            slow.set()
            await burst(GROUP_PARTITIONS)  # one per partition: c gets some of them
            await asyncio.wait_for(slow_started.wait(), 60)
            loop = asyncio.get_running_loop()
            joined_at = loop.time()
            async with running(d):
                sending = asyncio.create_task(burst(60))
                await _first(seen["d"])
                took = loop.time() - joined_at
                await sending
                await all_handled()
    # The group waited REVOKE_S for c's handler (then ~2 JoinGroup rounds and a
    # fetch: 2.4 s in all here), not until the coordinator gave c up at the
    # rebalance timeout (SESSION_S; 6.1 s with a 6 s session and no revoke bound).
    assert took < REVOKE_S + 5 < SESSION_S, f"the new member got no partition for {took:.1f}s"
    assert c.stats.handlers_cancelled == 1
    for partition in range(GROUP_PARTITIONS):  # no partition stuck or uncommitted
        offset = await committed(bootstrap, topic, g, partition)
        assert offset == per_partition[partition], (partition, offset, per_partition)


def _kcat() -> str:
    path = shutil.which("kcat")
    if path is None:
        _missing("kcat", RuntimeError("Debian's kcat is not installed (apt-get install kcat)"))
    return path


async def test_the_guides_kcat_command_lists_a_groups_dead_letters(cluster: ApacheKafka) -> None:
    """docs/operations.md, "Dead letters": Debian's kcat, as written, lists what a
    consumer dead-lettered: its key and the headers saying why."""
    kcat = _kcat()
    first = cluster.bootstrap_servers.split(",")[0]
    topic = f"t-{uuid.uuid4().hex[:12]}"
    dlq = f"{topic}.dlq"
    await _replicated_topic(cluster.bootstrap_servers, topic, 2)
    await _replicated_topic(cluster.bootstrap_servers, dlq, 2)
    poison = make_event()
    await produce_on(cluster.bootstrap_servers, topic, 1, poison)

    async def refuse(event: UserDeletedEvent) -> None:
        raise ValueError(f"cannot clean up {event.user_id}")

    consumer = UserDeletedConsumer(
        refuse,
        bootstrap_servers=cluster.bootstrap_servers,
        group_id=f"cleanup-{uuid.uuid4().hex[:6]}",
        topic=topic,
        dlq_topic=dlq,
        retry=RetryPolicy(max_attempts=2, initial_backoff_s=0.05, max_backoff_s=0.1),
    )
    async with running(consumer):
        await eventually(lambda: _true(consumer.stats.dead_lettered == 1), timeout=60)
    [command] = _guide_commands("### Dead letters")
    _program, *args = shlex.split(command.replace("KAFKA:9092", first))
    args = [arg.replace("user_deleted.dlq", dlq) for arg in args]
    done = await asyncio.to_thread(
        subprocess.run, [kcat, *args], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 1, done.stdout
    _partition, offset, key, headers = lines[0].split(" ", 3)
    assert (offset, key) == ("0", poison.user_id)
    assert "dlq-source-partition=1" in headers, headers
    assert f"dlq-error=ValueError: cannot clean up {poison.user_id}" in headers, headers
    assert "dlq-attempts=2" in headers, headers


async def test_the_guides_replay_command_has_a_stopped_group_handle_its_events_again(
    cluster: ApacheKafka,
) -> None:
    """docs/operations.md, "Replaying a group's events": with the group's consumers
    stopped, the command as written moves its offsets back to the given time and
    the restarted consumer handles every event again."""
    first = cluster.bootstrap_servers.split(",")[0]
    topic = f"t-{uuid.uuid4().hex[:12]}"
    await _replicated_topic(cluster.bootstrap_servers, topic, 2)
    await _replicated_topic(cluster.bootstrap_servers, f"{topic}.dlq", 2)
    events = [make_event() for _ in range(8)]
    for index, event in enumerate(events):
        await produce_on(cluster.bootstrap_servers, topic, index % 2, event)
    group_id = f"messaging-cleanup-{uuid.uuid4().hex[:6]}"
    handled: list[str] = []

    async def handler(event: UserDeletedEvent) -> None:
        handled.append(event.event_id)

    async def handle_everything() -> None:
        consumer = UserDeletedConsumer(
            handler, bootstrap_servers=cluster.bootstrap_servers, group_id=group_id, topic=topic
        )
        async with running(consumer):
            await eventually(lambda: _true(len(handled) >= len(events)), timeout=60)

    await handle_everything()
    assert sorted(handled) == sorted(e.event_id for e in events)
    [command] = _guide_commands("### Replaying a group's events")
    program, *args = shlex.split(
        command.replace("KAFKA:9092", first).replace("messaging-cleanup", group_id)
    )
    args = [topic if arg == "user_deleted" else arg for arg in args]
    out = await asyncio.to_thread(cluster.tool, TOOLS[program], *args)
    assert topic in out, out  # the tool prints each partition's new offset
    handled.clear()
    await handle_everything()
    assert sorted(handled) == sorted(e.event_id for e in events)


REASSIGN = "org.apache.kafka.tools.reassign.ReassignPartitionsCommand"
ELECT = "org.apache.kafka.tools.LeaderElectionCommand"


async def _move_leader(cluster: ApacheKafka, topic: str, replicas: list[int]) -> None:
    """Make `replicas[0]` the leader of `topic`'s partition 0, every broker staying
    up (the old leader a follower): reorder its replicas, then elect the preferred
    one, with Kafka's own tools."""
    first = cluster.bootstrap_servers.split(",")[0]
    plan = cluster.base_dir / f"{topic}-reassign.json"
    plan.write_text(
        json.dumps(
            {"version": 1, "partitions": [{"topic": topic, "partition": 0, "replicas": replicas}]}
        )
    )
    await asyncio.to_thread(
        cluster.tool, REASSIGN, "--bootstrap-server", first,
        "--reassignment-json-file", str(plan), "--execute",
    )  # fmt: skip

    async def led() -> bool:
        with contextlib.suppress(EmbeddedError):
            await asyncio.to_thread(
                cluster.tool, ELECT, "--bootstrap-server", first, "--election-type",
                "preferred", "--topic", topic, "--partition", "0",
            )  # fmt: skip
        return await _leader_of(cluster.bootstrap_servers, topic, 0) == replicas[0]

    await eventually(led, timeout=60, interval=1.0)


async def test_a_partition_reset_after_its_leader_moved_does_not_stall_a_cleanup_consumer(
    cluster: ApacheKafka,
) -> None:
    """A partition with no committed offset (a new group; nothing handled yet) is
    reset after each rebalance with a ListOffsets request to the leader the
    consumer last heard of. aiokafka 0.14 answers that leader's 'not leader' by
    retrying it every 100 ms without refreshing its metadata
    (consumer/fetcher.py, `_update_fetch_positions`), so such a partition stalled
    until the next periodic refresh: 5 minutes by default. Found behind the frozen
    broker test's stalls. UserDeletedConsumer refreshes its metadata every 5 s."""
    bootstrap = cluster.bootstrap_servers
    topic = f"t-{uuid.uuid4().hex[:12]}"
    nodes = [node.node_id for node in cluster.nodes]
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        await admin.start()
        await admin.create_topics(
            [
                NewTopic(topic, -1, -1, replica_assignments={0: nodes}),
                NewTopic(f"{topic}.dlq", 1, 3),
            ]
        )
    finally:
        await admin.close()
    await eventually(lambda: _leader_is(bootstrap, topic, nodes[0]), timeout=60)
    handled: list[str] = []

    async def handler(event: UserDeletedEvent) -> None:
        handled.append(event.event_id)

    def member(client_id: str) -> UserDeletedConsumer:
        return UserDeletedConsumer(
            handler,
            bootstrap_servers=bootstrap,
            group_id=f"cleanup-{topic}",
            topic=topic,
            dlq_topic=f"{topic}.dlq",
            client_id=client_id,  # member ids sort by it: "a-..." keeps partition 0
            revoke_timeout_s=REVOKE_S,
        )

    first = member("a-first")
    async with running(first):
        tp = TopicPartition(topic, 0)
        await eventually(lambda: _true(first._consumer.assignment() == {tp}), timeout=60)
        await asyncio.wait_for(first._consumer.position(tp), 30)  # reset at its leader
        await _move_leader(cluster, topic, [nodes[1], nodes[0], nodes[2]])
        # A second member joins: the group rebalances, the first keeps partition 0
        # and, with no committed offset, resets it again.
        async with running(member("z-second")):
            events = [make_event() for _ in range(5)]
            await produce_on(bootstrap, topic, 0, *events)
            await eventually(
                lambda: _true({e.event_id for e in events} <= set(handled)), timeout=45
            )


async def _position(consumer: Any, tp: TopicPartition) -> int | None:
    """The consumer's position, None while it has none (its reset not done yet:
    `position()` would wait for it)."""
    try:
        return int(await asyncio.wait_for(consumer.position(tp), 2))
    except TimeoutError:
        return None


async def _leader_is(bootstrap: str, topic: str, node: int) -> bool:
    try:
        return await _leader_of(bootstrap, topic, 0) == node
    except Exception:  # not elected yet
        return False
