"""The peer, side by side (#26 item 6): `auth-service relay` against Debezium's outbox
event router, the tool ops would pick instead, in one run:

    .venv/bin/python -m bench --only debezium

Both deliver the same kind of deletions from one PostgreSQL (embedded, logical
decoding on; a database per peer, both migrated) to one Apache Kafka broker
(`auth_service.local.apache_kafka`, one node), onto one `user_deleted` topic (6
partitions, as docker-compose.yml creates it). Debezium 3.6.1.Final runs in Kafka
Connect standalone, the broker's Kafka version, configured by properties only
(`connect.outbox_connector`): pgoutput, no snapshot of old rows, EventRouter mapping
`partition_key` -> key, `payload` -> value (bytes as they are), `event_id` /
`event_type` / `traceparent` -> headers, plus Kafka's InsertHeader for `content-type`.
The relay runs as deployed beside `serve`, with its defaults.

One peer runs while the other is paused (SIGSTOP, never inside a transaction of its
own), and one plain aiokafka consumer timestamps every record's arrival for both
(`arrivals.Arrivals`). Deletions commit with `synchronous_commit=on` (the embedded
server's `off` would hold logical decoding back by up to wal_writer_delay). Measured
(`measure.py`):

1. start-up: the process started -> its first event at the consumer;
2. our `UserDeletedConsumer` reading each peer's records, compared with the outbox;
3. a backlog of N rows (one transaction each, written while the peer is paused),
   drained: events/s from resume to the last arrival, the peer's CPU per event (the
   relay process; the Connect JVM, and of it the JIT compiler threads), PostgreSQL's
   CPU per event (writing + delivery). One backlog per peer first, not counted; then
   rounds taking turns, the outbox vacuumed and analyzed after the backlog was
   written (autovacuum is off on it, so that it cannot start in one drain and not
   another); then the relay once more with the statistics taken before the backlog
   (they say every row is published, as autovacuum leaves a steady outbox);
4. one deletion at a time (DeleteUser's transaction in this process: soft delete +
   outbox row + NOTIFY; the next after the previous arrived and a random pause of
   up to one poll interval): commit -> consumer, p50 / p99, with Debezium as shipped
   (`poll.interval.ms` 500) and then restarted on its slot with
   `poll.interval.ms=10`, in slices taking turns with the relay;
5. idle CPU, and memory.

Needs Java 17+ and Maven (one clear line and no figures without them).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from auth_client.contract import DEFAULT_DLQ_TOPIC, DEFAULT_TOPIC
from auth_service.local import apache_kafka
from auth_service.local.apache_kafka import ApacheKafka
from auth_service.local.embedded import EmbeddedPostgres
from bench import report
from bench.context import Context
from bench.debezium import connect, measure, source
from bench.debezium.arrivals import Arrivals
from bench.debezium.connect import KafkaConnect, Source, outbox_connector
from bench.debezium.measure import Drain, OneAtATime, Readable
from bench.debezium.peers import Peer, RelayProcess

TOPIC = DEFAULT_TOPIC
PARTITIONS = 6  # docker-compose.yml's KAFKA_PARTITIONS default
SLOT = "auth_bench_outbox"
SHIPPED_POLL_MS = 500  # Debezium's default poll.interval.ms
TUNED_POLL_MS = 10
TITLE = "Outbox relay vs Debezium's outbox event router (bench/debezium)"


@dataclass(frozen=True)
class Scale:
    backlog: int  # rows per drained backlog
    rounds: int  # backlogs per peer, taking turns
    samples: int  # deletions one at a time, per peer, with Debezium tuned
    shipped_samples: int  # the same with Debezium as shipped (its 500 ms dominate)
    slice_size: int
    idle_s: float
    readable: int  # deletions per peer read by UserDeletedConsumer

    def users(self) -> int:
        """Users each database needs for its deletions."""
        deletions = 0
        for samples in (self.samples, self.shipped_samples):
            deletions += samples + max(1, samples // self.slice_size)  # + a warm-up a slice
        return self.readable + deletions + 10


FULL = Scale(
    backlog=10_000,
    rounds=3,
    samples=200,
    shipped_samples=100,
    slice_size=50,
    idle_s=10.0,
    readable=20,
)
QUICK = Scale(
    backlog=2_000, rounds=1, samples=40, shipped_samples=20, slice_size=20, idle_s=3.0, readable=5
)


def unavailable() -> str | None:
    """Why this benchmark cannot run here (one line), or None."""
    why = apache_kafka.missing()
    if why is None and shutil.which("mvn") is None and not connect.cached():
        why = f"Debezium's classpath is resolved with Maven: {apache_kafka.INSTALL_HINT}"
    return why


@dataclass
class Results:
    scale: Scale
    started_s: dict[str, float] = field(default_factory=dict)
    readable: dict[str, Readable] = field(default_factory=dict)
    # Not counted: each peer's first backlog (a young JVM), and the restarted JVM's.
    warmup: dict[str, Drain] = field(default_factory=dict)
    drains: dict[str, list[Drain]] = field(default_factory=dict)
    # The relay with statistics taken before the backlog (Debezium reads no statistics).
    stale: Drain | None = None
    shipped: dict[str, OneAtATime] = field(default_factory=dict)
    tuned: dict[str, OneAtATime] = field(default_factory=dict)
    # share of one core, and of it the JIT compiler's
    idle: dict[str, tuple[float, float]] = field(default_factory=dict)
    rss: dict[str, int] = field(default_factory=dict)
    duplicates: dict[str, int] = field(default_factory=dict)
    misplaced: int = 0
    delivered: int = 0
    slots_left: int = -1
    unpublished_left: int = -1


@dataclass
class Stage:
    pg: EmbeddedPostgres
    kafka: ApacheKafka
    arrivals: Arrivals
    relay: Peer
    debezium: Peer
    connect: KafkaConnect


@contextlib.contextmanager
def _quiet(logger: str) -> Iterator[None]:
    log = logging.getLogger(logger)
    level = log.level
    log.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        log.setLevel(level)


async def _topics(bootstrap: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        await admin.start()
        await admin.create_topics(
            [NewTopic(name, PARTITIONS, 1) for name in (TOPIC, DEFAULT_DLQ_TOPIC)]
        )
    finally:
        await admin.close()


async def _infrastructure(
    stack: contextlib.AsyncExitStack, users: int
) -> tuple[EmbeddedPostgres, ApacheKafka, Arrivals, source.Outbox, source.Outbox]:
    pg = EmbeddedPostgres()
    stack.callback(pg.close)
    await asyncio.to_thread(pg.start)
    await source.enable_logical_decoding(pg)
    outboxes = []
    for name in ("peer_relay", "peer_debezium"):
        outbox = source.Outbox(await source.new_database(pg, name))
        stack.push_async_callback(outbox.close)
        await outbox.open(users)
        outboxes.append(outbox)
    kafka = await asyncio.to_thread(ApacheKafka, 1, heap="512m")
    stack.callback(kafka.close)
    with _quiet("aiokafka"):  # "Unable connect to ..." until the broker listens
        await asyncio.to_thread(kafka.start)
    await _topics(kafka.bootstrap_servers)
    arrivals = Arrivals(kafka.bootstrap_servers, TOPIC, PARTITIONS)
    await arrivals.start()
    stack.push_async_callback(arrivals.stop)
    return pg, kafka, arrivals, outboxes[0], outboxes[1]


async def _stage(stack: contextlib.AsyncExitStack, results: Results) -> Stage:
    """Everything started; each peer's start-up timed, then paused."""
    pg, kafka, arrivals, relay_box, debezium_box = await _infrastructure(
        stack, results.scale.users()
    )
    relay = RelayProcess(relay_box.url, kafka.bootstrap_servers, TOPIC)
    stack.callback(relay.stop)
    started = time.monotonic()
    relay.start()
    relay_peer = Peer("relay", relay_box, relay.pid, marks=True)
    results.started_s["relay"] = await measure.first_delivery(relay_peer, arrivals, started)
    await measure.pause(relay_peer)

    settings = Source(pg.host, pg.port, "peer_debezium", SLOT)
    jvm = await asyncio.to_thread(
        KafkaConnect, kafka.bootstrap_servers, outbox_connector(settings, TOPIC)
    )

    async def drop_slot() -> None:
        await asyncio.to_thread(jvm.stop)
        results.slots_left = await debezium_box.drop_slot(SLOT)

    stack.push_async_callback(drop_slot)
    stack.callback(jvm.close)
    started = time.monotonic()
    jvm.start()
    await asyncio.to_thread(jvm.wait_running)
    debezium = Peer("Debezium", debezium_box, jvm.pid, marks=False)
    results.started_s["Debezium"] = await measure.first_delivery(debezium, arrivals, started)
    await measure.pause(debezium)
    return Stage(pg, kafka, arrivals, relay_peer, debezium, jvm)


async def _restart_tuned(stage: Stage, results: Results) -> None:
    """Connect stopped (its task commits offsets) and started again on the same
    slot and offsets with `poll.interval.ms` lowered; a backlog not counted warms
    the new JVM up."""
    jvm = stage.connect
    await asyncio.to_thread(jvm.stop)
    jvm.connector["poll.interval.ms"] = str(TUNED_POLL_MS)
    started = time.monotonic()
    jvm.start()
    await asyncio.to_thread(jvm.wait_running)
    stage.debezium.pid = jvm.pid
    results.started_s["Debezium restarted"] = await measure.first_delivery(
        stage.debezium, stage.arrivals, started
    )
    await measure.pause(stage.debezium)
    pid = source.postmaster_pid(stage.pg)
    results.warmup["Debezium restarted"] = await measure.drain(
        stage.debezium, stage.arrivals, pid, results.scale.backlog
    )


async def _backlogs(stage: Stage, results: Results) -> None:
    """A backlog per peer not counted (warm-up), then `rounds` each, taking turns;
    then the relay's drain with the statistics of before the backlog."""
    peers = [stage.relay, stage.debezium]
    postmaster = source.postmaster_pid(stage.pg)
    backlog = results.scale.backlog
    for peer in peers:
        results.warmup[peer.name] = await measure.drain(peer, stage.arrivals, postmaster, backlog)
    for index in range(results.scale.rounds):
        for peer in peers[index % 2 :] + peers[: index % 2]:
            drained = await measure.drain(peer, stage.arrivals, postmaster, backlog)
            results.drains.setdefault(peer.name, []).append(drained)
    results.stale = await measure.drain(
        stage.relay, stage.arrivals, postmaster, backlog, stale=True
    )


async def _measure(stage: Stage, results: Results) -> None:
    scale = results.scale
    peers = [stage.relay, stage.debezium]
    bootstrap = stage.kafka.bootstrap_servers
    results.readable = await measure.readable(
        peers, stage.arrivals, bootstrap, TOPIC, scale.readable
    )
    await _backlogs(stage, results)
    results.shipped = await measure.one_at_a_time(
        peers, stage.arrivals, scale.shipped_samples, scale.slice_size, SHIPPED_POLL_MS / 1000
    )
    idle = await measure.idle_share(peers, scale.idle_s)
    results.idle = {"relay": idle["relay"], f"Debezium {SHIPPED_POLL_MS} ms": idle["Debezium"]}
    await _restart_tuned(stage, results)
    results.tuned = await measure.one_at_a_time(
        peers, stage.arrivals, scale.samples, scale.slice_size, TUNED_POLL_MS / 1000
    )
    idle = await measure.idle_share([stage.debezium], scale.idle_s)
    results.idle[f"Debezium {TUNED_POLL_MS} ms"] = idle["Debezium"]
    results.rss = {peer.name: peer.rss_bytes() for peer in peers}
    results.unpublished_left = await stage.relay.outbox.unpublished()
    twice = list(stage.arrivals.duplicates)
    results.duplicates = {peer.name: await peer.outbox.holds(twice) for peer in peers}
    results.misplaced = stage.arrivals.misplaced
    results.delivered = len(stage.arrivals.times)


async def run(ctx: Context) -> report.Section:
    why = unavailable()
    if why is not None:
        print(f"  debezium skipped: {why}", flush=True)
        skipped = report.Section("debezium", f"{TITLE} (skipped)")
        skipped.row("not run", "-", why)
        return skipped
    results = Results(FULL if not ctx.options.quick else QUICK)
    async with contextlib.AsyncExitStack() as stack:
        stage = await _stage(stack, results)
        await _measure(stage, results)
    return build_section(results)


# -- the table -----------------------------------------------------------------------


def _ms(low: OneAtATime) -> str:
    return f"{low.p50:.1f} / {low.p99:.1f} ms"


def _median(drains: list[Drain], attribute: str) -> float:
    return float(statistics.median(float(getattr(d, attribute)) for d in drains))


def _merged(*parts: OneAtATime) -> OneAtATime:
    return OneAtATime(
        ms=[v for part in parts for v in part.ms],
        cpu_s=sum(part.cpu_s for part in parts),
        jit_s=sum(part.jit_s for part in parts),
    )


def _jit(cpu: float, jit: float, unit: str = "µs") -> str:
    return f"{cpu:,.0f} {unit} (JIT compiler {jit:,.0f})"


def _readable(found: Readable) -> str:
    return (
        f"{found.handled_as_written} of {found.written} handled as written, "
        f"value = payload bytes {found.same_bytes} of {found.written}, "
        f"{found.dead_lettered} dead-lettered, {found.skipped} skipped"
    )


def _headers(found: Readable) -> str:
    return ", ".join(
        f"{name}={'null' if value is None else value.decode(errors='replace')[:40]}"
        for name, value in found.headers
    )


def _idle(r: Results) -> str:
    parts = []
    for ms in (SHIPPED_POLL_MS, TUNED_POLL_MS):
        share, jit = r.idle[f"Debezium {ms} ms"]
        parts.append(f"{share:.1%} at {ms} ms (JIT compiler {jit:.1%})")
    return "Debezium " + ", ".join(parts)


Row = tuple[str, str, str, float | None]


def _backlog_rows(r: Results) -> list[Row]:
    s = r.scale
    rate = {name: _median(drains, "events_per_s") for name, drains in r.drains.items()}
    cpu = {name: _median(drains, "cpu_us") for name, drains in r.drains.items()}
    jit = _median(r.drains["Debezium"], "jit_us")
    pg = {name: _median(drains, "pg_us") for name, drains in r.drains.items()}
    stale = r.stale
    assert stale is not None
    return [
        (
            (
                f"backlog of {s.backlog:,} deletions drained, statistics current "
                f"(median of {s.rounds})"
            ),
            f"relay {rate['relay']:,.0f} events/s",
            f"Debezium {rate['Debezium']:,.0f} events/s",
            rate["relay"] / rate["Debezium"],
        ),
        (
            "CPU per event draining it: relay process / Connect JVM",
            f"relay {cpu['relay']:,.0f} µs",
            f"Debezium {_jit(cpu['Debezium'], jit)}",
            cpu["relay"] / cpu["Debezium"],
        ),
        (
            "PostgreSQL CPU per event, backlog written + delivered",
            f"relay {pg['relay']:,.0f} µs",
            f"Debezium {pg['Debezium']:,.0f} µs",
            pg["relay"] / pg["Debezium"],
        ),
        (
            "the same backlog, statistics taken before it (all rows published)",
            (
                f"relay {stale.events_per_s:,.0f} events/s, {stale.cpu_us:,.0f} µs, "
                f"PostgreSQL {stale.pg_us:,.0f} µs"
            ),
            "Debezium reads no statistics (as above)",
            stale.events_per_s / rate["Debezium"],
        ),
    ]


def build_section(r: Results) -> report.Section:
    out = report.Section("debezium", TITLE)
    relay_low = _merged(r.shipped["relay"], r.tuned["relay"])
    tuned, shipped = r.tuned["Debezium"], r.shipped["Debezium"]
    mib = {name: value / 2**20 for name, value in r.rss.items()}
    rows: list[Row] = [
        (
            "start -> first event at the consumer",
            f"relay {r.started_s['relay']:.1f} s",
            (
                f"Debezium {r.started_s['Debezium']:.1f} s (new slot); restarted on its "
                f"slot {r.started_s['Debezium restarted']:.1f} s"
            ),
            None,
        ),
        (
            "DeleteUser commit -> consumer, p50 / p99, one at a time",
            f"relay {_ms(relay_low)}",
            f"Debezium poll.interval.ms={TUNED_POLL_MS}: {_ms(tuned)}",
            relay_low.p50 / tuned.p50,
        ),
        (
            "the same, Debezium as shipped",
            f"relay {_ms(relay_low)}",
            f"Debezium poll.interval.ms={SHIPPED_POLL_MS}: {_ms(shipped)}",
            relay_low.p50 / shipped.p50,
        ),
        *_backlog_rows(r),
        (
            "CPU per event, one at a time (the waits between included)",
            f"relay {relay_low.cpu_us:,.0f} µs",
            (
                f"Debezium {_jit(tuned.cpu_us, tuned.jit_us)} at {TUNED_POLL_MS} ms, "
                f"{_jit(shipped.cpu_us, shipped.jit_us)} at {SHIPPED_POLL_MS} ms"
            ),
            relay_low.cpu_us / tuned.cpu_us,
        ),
        ("idle CPU, share of one core", f"relay {r.idle['relay'][0]:.1%}", _idle(r), None),
        (
            "resident memory at the end",
            f"relay {mib['relay']:.0f} MiB",
            f"Debezium {mib['Debezium']:.0f} MiB (JVM, -Xmx512m)",
            None,
        ),
        (
            "auth_client's UserDeletedConsumer on the records",
            f"relay: {_readable(r.readable['relay'])}",
            f"Debezium: {_readable(r.readable['Debezium'])}",
            None,
        ),
        (
            "records on their key's partition; delivered twice",
            f"{r.delivered - r.misplaced:,} of {r.delivered:,}; "
            + ", ".join(f"{name} {count}" for name, count in r.duplicates.items()),
            (
                f"relay rows left unpublished {r.unpublished_left}; "
                f"replication slots left {r.slots_left}"
            ),
            None,
        ),
    ]
    for figure, value, reference, ratio in rows:
        out.row(figure, value, reference, ratio)
    out.figures = _figures(r, relay_low)
    out.notes.extend(_notes(r))
    return out


def _figures(r: Results, relay_low: OneAtATime) -> dict[str, float]:
    figures = {f"started_s_{k.replace(' ', '_')}": v for k, v in r.started_s.items()}
    lows = {
        "relay": relay_low,
        f"debezium_{TUNED_POLL_MS}ms": r.tuned["Debezium"],
        f"debezium_{SHIPPED_POLL_MS}ms": r.shipped["Debezium"],
    }
    for name, low in lows.items():
        figures |= {
            f"{name}_p50_ms": low.p50,
            f"{name}_p99_ms": low.p99,
            f"{name}_cpu_us_one_at_a_time": low.cpu_us,
        }
    for name, drains in r.drains.items():
        key = name.lower()
        figures |= {
            f"{key}_backlog_events_per_s": _median(drains, "events_per_s"),
            f"{key}_backlog_cpu_us": _median(drains, "cpu_us"),
            f"{key}_backlog_pg_us": _median(drains, "pg_us"),
        }
    if r.stale is not None:
        figures["relay_backlog_stale_statistics_events_per_s"] = r.stale.events_per_s
    figures |= {f"idle_share_{k.replace(' ', '_')}": v[0] for k, v in r.idle.items()}
    return figures


def _drain(d: Drain) -> str:
    jit = f", JIT {d.jit_us:,.0f}" if d.jit_us else ""
    return f"{d.events_per_s:,.0f}/s ({d.cpu_us:,.0f} µs{jit}, first after {d.first_s:.2f} s)"


def _notes(r: Results) -> list[str]:
    rounds = "; ".join(
        f"{name}: " + ", ".join(_drain(d) for d in drains) for name, drains in r.drains.items()
    )
    warmups = "; ".join(f"{name}: {_drain(d)}" for name, d in r.warmup.items())
    return [
        (
            "From `bench/debezium` (see its docstring): one PostgreSQL, one Apache Kafka "
            f"broker, topic `{TOPIC}` ({PARTITIONS} partitions); each peer paused (SIGSTOP) "
            "while the other is measured; one plain aiokafka consumer timestamps both."
        ),
        f"Counted backlogs (events/s, peer CPU per event): {rounds}.",
        f"Not counted (first backlog of each process): {warmups}.",
        f"Headers of a relay record: {_headers(r.readable['relay'])}.",
        f"Headers of a Debezium record: {_headers(r.readable['Debezium'])}.",
    ]
