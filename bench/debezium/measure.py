"""What is measured of each peer, the same way for both: start-up, a backlog drained,
one deletion at a time, idle, and whether our own consumer reads what it wrote.
Every function resumes the peer it measures and pauses it again before returning,
so the other peer never runs meanwhile."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import random
import statistics
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from auth_client.contract import UserDeletedEvent
from auth_client.events import UserDeletedConsumer
from bench import procstat
from bench.debezium.arrivals import Arrivals
from bench.debezium.peers import Peer

DELIVERY_TIMEOUT_S = 600.0


async def pause(peer: Peer) -> None:
    """SIGSTOP the peer, but not inside a transaction of its own: one held open while
    it is paused would, e.g., make a new logical slot wait for it (snapshot building
    waits for every transaction running)."""
    for _ in range(300):
        peer.pause()
        if not await peer.outbox.transactions_open():
            return
        peer.resume()
        await asyncio.sleep(0.01)
    peer.pause()


@contextlib.asynccontextmanager
async def running(peer: Peer) -> AsyncIterator[None]:
    peer.resume()
    try:
        yield
    finally:
        await pause(peer)


async def first_delivery(peer: Peer, arrivals: Arrivals, started: float) -> float:
    """Seconds from `started` (the process started, or restarted) until its
    first event arrived: a probe row every 0.25 s until one does (rows committed
    before Debezium's slot exists are never its events)."""
    probes: list[str] = []
    deadline = started + 300
    while time.monotonic() < deadline:
        probes.append(await peer.outbox.probe())
        at = await arrivals.wait_any(probes, 0.25)
        if at is not None:
            return at - started
    raise TimeoutError(f"{peer.name}: no event delivered 300 s after its start")


@dataclass(frozen=True)
class Drain:
    """One backlog drained."""

    events: int
    events_per_s: float  # events / (last arrival - resumed)
    first_s: float  # resumed -> first arrival
    cpu_us: float  # the peer's CPU per event
    jit_us: float  # of which its JIT compiler threads (a JVM's; 0 for Python)
    pg_us: float  # PostgreSQL's CPU per event: writing the backlog and delivering it


async def _settled(peer: Peer) -> None:
    """Until the peer's own bookkeeping is done: the relay marks rows after Kafka
    acknowledged them, so its CPU for a batch ends when the last row is marked."""
    while peer.marks and await peer.outbox.unpublished():
        await asyncio.sleep(0.02)


async def drain(
    peer: Peer, arrivals: Arrivals, postmaster: int, count: int, *, stale: bool = False
) -> Drain:
    """`count` rows written while the peer is paused, then resumed: how fast the
    backlog reaches the consumer and what it costs. The outbox is vacuumed and
    analyzed after the backlog was written (statistics current), or with `stale`
    before (statistics say every row is published: autovacuum's last visit in
    steady state); that work is not counted."""
    pg = procstat.tree_cpu_seconds
    if stale:
        await peer.outbox.analyze()
    writing = pg(postmaster)
    keys = await peer.outbox.backlog(count)
    written = pg(postmaster)
    if not stale:
        await peer.outbox.analyze()
    await peer.outbox.notify()  # a relay starting on a backlog looks at once, too
    delivering = pg(postmaster)
    cpu_before, jit_before = peer.cpu_seconds(), peer.compiler_cpu_seconds()
    resumed = time.monotonic()
    async with running(peer):
        last = await arrivals.wait_all(keys, DELIVERY_TIMEOUT_S)
        await _settled(peer)
        cpu = peer.cpu_seconds() - cpu_before
        jit = peer.compiler_cpu_seconds() - jit_before
    # PostgreSQL: writing the backlog and delivering it (the VACUUM ANALYZE not).
    pg_s = (written - writing) + (pg(postmaster) - delivering)
    first = min(arrivals.times[k] for k in keys)
    return Drain(
        events=count,
        events_per_s=count / max(last - resumed, 1e-6),
        first_s=first - resumed,
        cpu_us=cpu / count * 1e6,
        jit_us=jit / count * 1e6,
        pg_us=pg_s / count * 1e6,
    )


@dataclass
class OneAtATime:
    """Deletions one at a time (the next after the previous arrived): DeleteUser's
    commit -> the consumer, in ms, and the peer's CPU over those slices."""

    ms: list[float] = field(default_factory=list)
    cpu_s: float = 0.0
    jit_s: float = 0.0  # of which JIT compiler threads

    def pct(self, q: float) -> float:
        ordered = sorted(self.ms)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    @property
    def p50(self) -> float:
        return statistics.median(self.ms)

    @property
    def p99(self) -> float:
        return self.pct(0.99)

    @property
    def cpu_us(self) -> float:
        return self.cpu_s / max(len(self.ms), 1) * 1e6

    @property
    def jit_us(self) -> float:
        return self.jit_s / max(len(self.ms), 1) * 1e6


async def _slice(
    peer: Peer, arrivals: Arrivals, count: int, into: OneAtATime, gap: Callable[[], float]
) -> None:
    async with running(peer):
        # Not counted: the first event after a pause also wakes the peer's connections.
        await arrivals.wait_all([await peer.outbox.delete()], DELIVERY_TIMEOUT_S)
        cpu_before, jit_before = peer.cpu_seconds(), peer.compiler_cpu_seconds()
        for _ in range(count):
            await asyncio.sleep(gap())
            key = await peer.outbox.delete()
            committed = time.monotonic()
            arrived = await arrivals.wait_all([key], DELIVERY_TIMEOUT_S)
            into.ms.append((arrived - committed) * 1000)
        await _settled(peer)
        into.cpu_s += peer.cpu_seconds() - cpu_before
        into.jit_s += peer.compiler_cpu_seconds() - jit_before


async def one_at_a_time(
    peers: list[Peer], arrivals: Arrivals, samples: int, slice_size: int, max_gap_s: float
) -> dict[str, OneAtATime]:
    """`samples` deletions per peer, in slices of `slice_size` taking turns (the
    order rotated every round), so a burst of steal hits both alike. Before each
    deletion a pause drawn uniformly from [0, `max_gap_s`) (the same draws for both
    peers): a deletion made right after the previous event arrived would otherwise
    fall at the same point of Debezium's poll cycle every time."""
    out = {peer.name: OneAtATime() for peer in peers}
    draws = {peer.name: random.Random(20261206) for peer in peers}
    for index in range(max(1, samples // slice_size)):
        shift = index % len(peers)
        for peer in peers[shift:] + peers[:shift]:
            gap = functools.partial(draws[peer.name].uniform, 0, max_gap_s)
            await _slice(peer, arrivals, slice_size, out[peer.name], gap)
    return out


async def idle_share(peers: list[Peer], seconds: float) -> dict[str, tuple[float, float]]:
    """CPU of each peer with nothing to deliver, as a share of one core, and the
    share of that core its JIT compiler threads took."""
    for peer in peers:
        peer.resume()
    try:
        before = {p.name: (p.cpu_seconds(), p.compiler_cpu_seconds()) for p in peers}
        await asyncio.sleep(seconds)
        return {
            p.name: (
                (p.cpu_seconds() - before[p.name][0]) / seconds,
                (p.compiler_cpu_seconds() - before[p.name][1]) / seconds,
            )
            for p in peers
        }
    finally:
        for peer in peers:
            await pause(peer)


@dataclass(frozen=True)
class Readable:
    """What our UserDeletedConsumer made of a peer's records."""

    written: int
    handled_as_written: int  # the handler got exactly the event stored in the outbox
    same_bytes: int  # the record's value is the payload column's bytes
    dead_lettered: int
    skipped: int
    headers: list[tuple[str, bytes | None]]


async def readable(
    peers: list[Peer], arrivals: Arrivals, bootstrap: str, topic: str, count: int
) -> dict[str, Readable]:
    """`count` deletions through each peer in turn, read by auth_client's own
    UserDeletedConsumer (a new group, from the topic's start) as a service reads
    them; compared with what the outbox holds."""
    handled: dict[str, UserDeletedEvent] = {}

    async def handler(event: UserDeletedEvent) -> None:
        handled[event.user_id] = event

    consumer = UserDeletedConsumer(
        handler, bootstrap_servers=bootstrap, group_id=f"bench-peer-{uuid.uuid4()}", topic=topic
    )
    out = {}
    async with consumer:
        task = asyncio.create_task(consumer.run())
        for peer in peers:
            stats_before = (consumer.stats.dead_lettered, consumer.stats.skipped)
            keys = peer.outbox.next_keys(count)
            arrivals.keep(keys)
            async with running(peer):
                for _ in range(count):
                    await peer.outbox.delete()
                await arrivals.wait_all(keys, DELIVERY_TIMEOUT_S)
                await _until(lambda ks=keys: all(k in handled for k in ks), 60)
            written = await peer.outbox.written(keys)
            out[peer.name] = Readable(
                written=count,
                handled_as_written=sum(handled.get(k) == written[k][0] for k in keys),
                same_bytes=sum(arrivals.kept[k].value == written[k][1] for k in keys),
                dead_lettered=consumer.stats.dead_lettered - stats_before[0],
                skipped=consumer.stats.skipped - stats_before[1],
                headers=list(arrivals.kept[keys[0]].headers),
            )
        consumer.stop()
        await task
    return out


async def _until(check: object, timeout: float) -> None:
    assert callable(check)
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError("UserDeletedConsumer did not handle every event")
        await asyncio.sleep(0.05)
