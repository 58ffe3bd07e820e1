"""Relay benchmark against real processes: PostgreSQL and the broker (embedded unless
DATABASE_URL / KAFKA_BOOTSTRAP_SERVERS point elsewhere), `auth-service relay` and
`auth-service serve` as child processes.

    .venv/bin/python bench/bench_relay.py

1. Throughput: a backlog of BACKLOG outbox rows, then one `auth-service relay`
   process drains it. events/s = rows / (last published_at - first published_at),
   and also wall-clock from process start to an empty outbox.
2. Latency: `auth-service serve` (relay inside), a UserDeletedConsumer in this
   process; for LATENCY_SAMPLES users one at a time: DeleteUser returned (commit)
   -> handler called. p50 / p99 in milliseconds.

Prints a table and returns the figures from `run()`. Never asserted in tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import statistics
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import grpc

from auth_client.contract import admin_pb2, admin_pb2_grpc
from auth_client.events import UserDeletedConsumer, UserDeletedEvent, encode_user_deleted
from auth_service.local.broker import EmbeddedKafka
from auth_service.local.embedded import EmbeddedPostgres, free_port
from auth_service.store.migrations import migrate
from auth_service.store.outbox import write_event

BACKLOG = 5000
LATENCY_SAMPLES = 200
# How long a fetch waits for data on the broker. The embedded broker answers a fetch
# only when this expires (Kafka answers as soon as data arrives), so on it the
# consumer side of the latency is about half of this. Default: the consumer's own
# default (25 ms); BENCH_FETCH_MAX_WAIT_MS=500 shows aiokafka's default.
FETCH_MAX_WAIT_MS = int(os.environ.get("BENCH_FETCH_MAX_WAIT_MS", "25"))
TOKEN = "bench-admin-token-0123456789"
REPO = Path(__file__).resolve().parents[1]


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _child(args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "auth_service", *args],
        cwd=REPO,
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


async def _fresh_database(admin_url: str) -> str:
    name = f"bench_relay_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f"CREATE DATABASE {name}")
    finally:
        await conn.close()
    head, _, _ = admin_url.rpartition("/")
    url = f"{head}/{name}"
    await asyncio.to_thread(migrate, url)
    return url


async def _throughput(url: str, bootstrap: str) -> dict[str, float]:
    topic = f"bench-{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(url)
    try:
        now = datetime.now(UTC)
        async with conn.transaction():
            for _ in range(BACKLOG):
                event_id, user_id = uuid.uuid4(), str(uuid.uuid4())
                payload = encode_user_deleted(
                    UserDeletedEvent(str(event_id), user_id, deleted_at=now, occurred_at=now)
                )
                await write_event(
                    conn,
                    event_type="auth.v1.UserDeleted",
                    key=user_id,
                    payload=payload,
                    event_id=event_id,
                    notify=False,
                )
        env = {"DATABASE_URL": url, "KAFKA_BOOTSTRAP_SERVERS": bootstrap, "KAFKA_TOPIC": topic}
        started = time.monotonic()
        relay = _child(["relay"], env)
        try:
            while await conn.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL"):
                await asyncio.sleep(0.05)
            wall = time.monotonic() - started
        finally:
            _stop(relay)
        span = await conn.fetchval(
            "SELECT extract(epoch FROM max(published_at) - min(published_at))::float8 FROM outbox"
        )
    finally:
        await conn.close()
    return {
        "relay_events_per_s": BACKLOG / max(span, 1e-6),
        "relay_wall_s_incl_startup": wall,
    }


async def _latency(url: str, bootstrap: str) -> dict[str, float]:
    topic = f"bench-{uuid.uuid4().hex[:8]}"
    port = free_port()
    env = {
        "DATABASE_URL": url,
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "KAFKA_TOPIC": topic,
        "GRPC_LISTEN": f"127.0.0.1:{port}",
        "ADMIN_TOKENS": TOKEN,
    }
    server = _child(["serve"], env)
    arrived: dict[str, float] = {}
    signal = asyncio.Event()

    async def handler(event: UserDeletedEvent) -> None:
        arrived[event.user_id] = time.monotonic()
        signal.set()

    metadata = (("authorization", f"Bearer {TOKEN}"),)
    latencies: list[float] = []
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            await asyncio.wait_for(channel.channel_ready(), 30)
            admin = admin_pb2_grpc.UserAdminServiceStub(channel)
            users = []
            for i in range(LATENCY_SAMPLES + 1):
                reply = await admin.CreateUser(
                    admin_pb2.CreateUserRequest(username=f"bench{i}_{uuid.uuid4().hex[:6]}"),
                    metadata=metadata,
                    timeout=10,
                )
                users.append(reply.user.id)
            consumer = UserDeletedConsumer(
                handler,
                bootstrap_servers=bootstrap,
                group_id=f"bench-{topic}",
                topic=topic,
                consumer_options={"fetch_max_wait_ms": FETCH_MAX_WAIT_MS},
            )
            async with consumer:
                task = asyncio.create_task(consumer.run())
                # Warm-up: the first event also waits for the group to form.
                await admin.DeleteUser(
                    admin_pb2.DeleteUserRequest(user_id=users[0]), metadata=metadata, timeout=10
                )
                await asyncio.wait_for(_until(lambda: users[0] in arrived, signal), 60)
                for user_id in users[1:]:
                    await admin.DeleteUser(
                        admin_pb2.DeleteUserRequest(user_id=user_id), metadata=metadata, timeout=10
                    )
                    committed = time.monotonic()
                    await asyncio.wait_for(_until(lambda u=user_id: u in arrived, signal), 30)
                    latencies.append((arrived[user_id] - committed) * 1000)
                consumer.stop()
                await task
    finally:
        _stop(server)
    return {
        "delete_to_consumer_p50_ms": statistics.median(latencies),
        "delete_to_consumer_p99_ms": _pct(latencies, 0.99),
        "delete_to_consumer_max_ms": max(latencies),
    }


async def _until(check: object, signal: asyncio.Event) -> None:
    assert callable(check)
    while not check():
        signal.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(signal.wait(), 0.5)


async def run() -> dict[str, float]:
    with contextlib.ExitStack() as stack:
        admin_url = os.environ.get("DATABASE_URL")
        if not admin_url:
            pg = EmbeddedPostgres()
            stack.callback(pg.close)
            await asyncio.to_thread(pg.start)
            admin_url = pg.url
        bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
        if not bootstrap:
            broker = EmbeddedKafka()
            stack.callback(broker.close)
            await asyncio.to_thread(broker.start)
            bootstrap = broker.bootstrap_servers
        figures = await _throughput(await _fresh_database(admin_url), bootstrap)
        figures.update(await _latency(await _fresh_database(admin_url), bootstrap))
        return figures


def main() -> None:
    figures = asyncio.run(run())
    print(
        f"bench_relay on {platform.node()} ({os.cpu_count()} cores), python {sys.version.split()[0]}"
    )
    print(f"  backlog {BACKLOG} rows, {LATENCY_SAMPLES} latency samples (one delete at a time),")
    print(f"  consumer fetch_max_wait_ms={FETCH_MAX_WAIT_MS}")
    for name, value in figures.items():
        print(f"  {name:<32} {value:10.1f}")


if __name__ == "__main__":
    main()
