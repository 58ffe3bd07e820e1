"""A local replica in the client (#30 item 4): validated inserts with the replica
against FK-checked ones, cold and warm, the RPC path beside them; the replica's
load time and memory for USERS users; create -> visible in the replica.

    .venv/bin/python -m bench.bench_client_replica            # everything
    .venv/bin/python -m bench.bench_client_replica --users 100000 --seconds 3

Starts its own processes on free loopback ports: embedded PostgreSQL holding
USERS users (bench/dataset.py's loader, its own data directory under bench/.data,
kept for the next run), the embedded broker with the `user_created` and
`user_deleted` topics, and auth-service in a subprocess of this module (`--serve`:
`AuthServer` with user_created events on and its relay, as `serve` will run once
the server has a setting for them; configured by the same environment variables).

1. Inserts, as bench/inserts.py measures them (its table, its writer loop
   `insert_writer._drive`, PROCESSES processes x WRITERS writers each, one
   autocommit INSERT per row): `fk_*` into a table with `REFERENCES users(id)` in
   the auth database; `replica_*` into a table without FK in another database,
   each insert after `require_user` answered by the writer process's replica
   (loaded before the timed run, ~17 bytes a user); `rpc_cold` the same through
   RPCs (a fresh client without replica, every sender new); `plain_*` without
   any check. Cold: every sender new to the process (a row's sender lands on a
   cold index page, so cold rows cost more than warm ones whatever the check);
   warm: senders drawn from HOT_USERS. Medians of `rounds` rounds, the order of
   the runs rotated each round. CPU per row: the writers, auth-service and PostgreSQL, from /proc,
   over the timed run only (the writers load their replicas and warm up first,
   then all start at once).
2. Load: a fresh process (`--load`) opens an AuthClient with a replica: the time
   `async with` takes, the replica's arrays (bytes a user) and the process's RSS
   before and after (a user's share of the growth: the arrays, plus the client's
   channel, its Kafka consumer and what the allocator keeps after `malloc_trim`);
   a replica hit (`user_exists(uuid.UUID)`); the CPU a loaded replica costs while
   nothing happens (its consumer fetching every 25 ms, the end-offset checks), and
   the same with aiokafka's default fetch wait of 500 ms.
3. Create -> visible: CreateUser (then DeleteUser) one at a time, SAMPLES each; the
   time from the call's return until the replica of this process has applied the
   event's position (polled every 0.5 ms). The embedded broker answers a fetch only
   when its wait (25 ms in the replica) expires, so that bounds the figures here.

`run()` returns the figures; `main()` prints them. Never asserted in tests.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import gc
import json
import os
import platform
import secrets
import signal
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import uvloop
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from grpc_health.v1 import health_pb2, health_pb2_grpc

from auth_client import AuthClient, CacheConfig, ReplicaConfig
from auth_client.contract import admin_pb2, admin_pb2_grpc
from auth_service.local.broker import EmbeddedKafka
from auth_service.local.embedded import free_port
from bench import procstat
from bench.dataset import DATA_DIR, Dataset
from bench.insert_writer import POOL_SIZE, WRITERS, _drive, _senders
from bench.inserts import _COLUMNS
from bench.report import median, percentile

USERS = 1_000_000
SECONDS = 5.0
WARMUP = 1.0
PROCESSES = 2
HOT_USERS = 1000
SAMPLES = 200
IDLE_S = 5.0  # a loaded replica left alone: the CPU its following costs
SLOW_FETCH_MS = 500  # the idle cost again with aiokafka's default fetch wait
CREATED_TOPIC, DELETED_TYPE_TOPIC = "user_created", "user_deleted"
MESSAGING_DB = "bench_replica_messaging"
REPO = Path(__file__).resolve().parent.parent
# kind -> (table, check): fk (REFERENCES users), replica, rpc (AuthClient without
# replica), plain (no check)
KINDS = {
    "fk_warm": "fk",
    "replica_warm": "replica",
    "plain_warm": "plain",
    "fk_cold": "fk",
    "replica_cold": "replica",
    "rpc_cold": "rpc",
    "plain_cold": "plain",
}
COLD = [kind for kind in KINDS if kind.endswith("_cold")]


# -- the server process (--serve) ---------------------------------------------


async def _serve() -> None:
    """auth-service with user_created events on, configured from the environment
    (Settings.from_env), until SIGTERM."""
    from auth_service.api.server import AuthServer  # noqa: PLC0415 - only in --serve
    from auth_service.config import Settings  # noqa: PLC0415
    from auth_service.signals import wait_for_shutdown_signal  # noqa: PLC0415

    settings = Settings.from_env()
    async with AuthServer(settings, user_created_topic=os.environ["BENCH_USER_CREATED_TOPIC"]):
        await wait_for_shutdown_signal()


class Server:
    """`python -m bench.bench_client_replica --serve` on a free port."""

    def __init__(self, database_url: str, bootstrap: str) -> None:
        self.target = f"127.0.0.1:{free_port()}"
        self.token = secrets.token_urlsafe(24)
        self.admin_md = (("authorization", f"Bearer {self.token}"),)
        self._log = tempfile.NamedTemporaryFile(prefix="bench-replica-serve-", delete=False)  # noqa: SIM115
        self._env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "GRPC_LISTEN": self.target,
            "ADMIN_TOKENS": self.token,
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "KAFKA_TOPIC": DELETED_TYPE_TOPIC,
            "RELAY_POLL_INTERVAL_S": "0.2",
            "MAX_CONCURRENT_RPCS": "0",
            "LOG_LEVEL": "WARNING",
            "LOG_FORMAT": "text",
            "SHUTDOWN_GRACE_S": "1",
            "BENCH_USER_CREATED_TOPIC": CREATED_TOPIC,
        }
        self._proc: asyncio.subprocess.Process | None = None

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    async def start(self, timeout: float = 120.0) -> None:
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.bench_client_replica",
            "--serve",
            env=self._env,
            cwd=REPO,
            stdout=self._log,
            stderr=self._log,
        )
        deadline = time.monotonic() + timeout
        async with grpc.aio.insecure_channel(self.target) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            while True:
                if self._proc.returncode is not None:
                    raise RuntimeError(f"the bench server exited: {self.log_tail()}")
                with contextlib.suppress(grpc.aio.AioRpcError):
                    reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=1)
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the bench server is not SERVING: {self.log_tail()}")
                await asyncio.sleep(0.1)

    def log_tail(self) -> str:
        return Path(self._log.name).read_text(errors="replace")[-2000:]

    async def stop(self) -> None:
        if self._proc is not None and self._proc.returncode is None:
            self._proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self._proc.wait(), 20)
            except TimeoutError:
                self._proc.kill()
                await self._proc.wait()
        self._log.close()
        Path(self._log.name).unlink(missing_ok=True)


# -- a writer process (--writer) and the load process (--load) -------------------


def _client(options: dict[str, Any], *, replica: bool) -> AuthClient:
    return AuthClient(
        options["target"],
        token=options["token"],
        timeout=5.0,
        cache=CacheConfig(max_size=1_000_000, positive_ttl=3600, negative_ttl=3600),
        replica=ReplicaConfig(
            options["bootstrap"],
            load_timeout=300.0,
            consumer_options=options.get("consumer_options", {}),
        )
        if replica
        else None,
    )


async def _writer(options: dict[str, Any]) -> dict[str, Any]:
    """One messaging-service process, as bench/insert_writer.py runs one, with the
    check of `options["check"]`."""
    check = options["check"]
    url = options["fk_url"] if check == "fk" else options["plain_url"]
    table = "bench_replica_messages_fk" if check == "fk" else "messages"
    sql = f"INSERT INTO {table} (sender_id, body) VALUES ($1, $2)"
    pool = await asyncpg.create_pool(url, min_size=POOL_SIZE, max_size=POOL_SIZE)
    try:
        async with _client(options, replica=check == "replica") as client:

            async def insert(sender: uuid.UUID) -> None:
                if check in {"replica", "rpc"}:
                    await client.require_user(sender)
                await pool.execute(sql, sender, "hello")

            senders = _senders(options)
            if options["hot"]:
                await _drive(senders, insert, options["warmup"])
            # Loaded and warmed up: the parent starts every writer at once, and counts
            # the servers' CPU from then on.
            print(json.dumps({"ready": True}), flush=True)
            await asyncio.to_thread(sys.stdin.readline)
            outcome = await _drive(senders, insert, options["seconds"])
            outcome["rpcs"] = client.stats().rpcs
            outcome["replica_hits"] = client.stats().replica_hits
            return outcome
    finally:
        await pool.close()


async def _load(options: dict[str, Any]) -> dict[str, Any]:
    """Open a client with a replica in this fresh process: time and memory."""
    gc.collect()
    _trim()
    before = procstat.tree_rss_bytes(os.getpid())
    started = time.perf_counter()
    async with _client(options, replica=True) as client:
        seconds = time.perf_counter() - started
        gc.collect()
        _trim()
        after = procstat.tree_rss_bytes(os.getpid())
        stats = client.replica_stats()
        assert stats is not None
        hit = await _hit_us(client, options["probe"])
        idle = time.process_time()
        await asyncio.sleep(IDLE_S)
        idle_cpu = (time.process_time() - idle) / IDLE_S
        return {
            "idle_cpu_share": idle_cpu,
            "load_s": seconds,
            "users": stats.users,
            "array_bytes": stats.bytes,
            "rss_growth_bytes": after - before,
            "rss_after_bytes": after,
            "hit_us": hit,
        }


async def _hit_us(client: AuthClient, probe: str, calls: int = 200_000) -> float:
    """`user_exists(uuid.UUID)` answered by the replica, µs a call."""
    key = uuid.UUID(probe)
    assert await client.user_exists(key)
    started = time.perf_counter()
    for _ in range(calls):
        await client.user_exists(key)
    return (time.perf_counter() - started) * 1e6 / calls


async def _subprocess(mode: str, options: dict[str, Any]) -> dict[str, Any]:
    proc = await _spawn(mode, options)
    out, _ = await proc.communicate()
    return _result(mode, proc, out)


async def _spawn(mode: str, options: dict[str, Any]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.bench_client_replica",
        mode,
        json.dumps(options),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        cwd=REPO,
    )


def _result(mode: str, proc: asyncio.subprocess.Process, out: bytes) -> dict[str, Any]:
    if proc.returncode != 0:
        raise RuntimeError(f"bench.bench_client_replica {mode} exited with {proc.returncode}")
    result: dict[str, Any] = json.loads(out.splitlines()[-1])
    return result


def _trim() -> None:
    """Give freed heap back to the system (glibc), so RSS shows what is held."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


# -- the measurements ----------------------------------------------------------


@dataclass
class Outcome:
    inserts: int
    seconds: float
    rpcs: int
    writer_cpu_s: float
    server_cpu_s: float
    pg_cpu_s: float

    @property
    def per_s(self) -> float:
        return self.inserts / self.seconds if self.seconds else 0.0

    def cpu_us_per_row(self) -> float:
        cpu = self.writer_cpu_s + self.server_cpu_s + self.pg_cpu_s
        return cpu * 1e6 / max(1, self.inserts)


async def _setup_tables(data: Dataset) -> None:
    admin = await asyncpg.connect(data.server.url)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{MESSAGING_DB}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{MESSAGING_DB}"')
    finally:
        await admin.close()
    fk = await asyncpg.connect(data.url)
    plain = await asyncpg.connect(data.url_for(MESSAGING_DB))
    try:
        await fk.execute("DROP TABLE IF EXISTS bench_replica_messages_fk")
        await fk.execute(
            "CREATE TABLE bench_replica_messages_fk ("
            + _COLUMNS.format(fk=" REFERENCES users (id)")
            + ")"
        )
        await fk.execute("CREATE INDEX ON bench_replica_messages_fk (sender_id)")
        await plain.execute("CREATE TABLE messages (" + _COLUMNS.format(fk="") + ")")
        await plain.execute("CREATE INDEX ON messages (sender_id)")
    finally:
        await fk.close()
        await plain.close()


async def _teardown_tables(data: Dataset) -> None:
    admin = await asyncpg.connect(data.server.url)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{MESSAGING_DB}" WITH (FORCE)')
    finally:
        await admin.close()
    fk = await asyncpg.connect(data.url)
    try:
        await fk.execute("DROP TABLE IF EXISTS bench_replica_messages_fk")
    finally:
        await fk.close()


@dataclass
class Setup:
    data: Dataset
    server: Server
    bootstrap: str
    seconds: float

    def options(self, **extra: Any) -> dict[str, Any]:
        return {
            "target": self.server.target,
            "token": self.server.token,
            "bootstrap": self.bootstrap,
            "fk_url": self.data.url,
            "plain_url": self.data.url_for(MESSAGING_DB),
            "warmup": WARMUP,
            "seconds": self.seconds,
            **extra,
        }


async def _insert_run(setup: Setup, kind: str, ids: list[str], seed: int) -> Outcome:
    hot = kind.endswith("_warm")
    pg_pid = setup.data.postmaster_pid()
    with tempfile.TemporaryDirectory(prefix="bench-replica-") as tmp:
        procs = []
        for index in range(PROCESSES):
            ids_file = Path(tmp) / f"ids{index}"
            ids_file.write_text("\n".join(ids if hot else ids[index::PROCESSES]))
            options = setup.options(
                check=KINDS[kind], hot=hot, ids_file=str(ids_file), seed=seed * 100 + index
            )
            procs.append(await _spawn("--writer", options))
        for proc in procs:  # loaded (a replica) and warmed up (hot senders)
            assert proc.stdout is not None
            line = await proc.stdout.readline()
            if not line:
                raise RuntimeError("a writer exited before it was ready")
        server_cpu, pg_cpu = (
            procstat.tree_cpu_seconds(setup.server.pid),
            procstat.tree_cpu_seconds(pg_pid),
        )
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write(b"go\n")
            await proc.stdin.drain()
        outs = [await proc.communicate() for proc in procs]
        server_cpu = procstat.tree_cpu_seconds(setup.server.pid) - server_cpu
        pg_cpu = procstat.tree_cpu_seconds(pg_pid) - pg_cpu
        results = [_result("--writer", p, out) for p, (out, _) in zip(procs, outs, strict=True)]
    return Outcome(
        inserts=sum(r["inserts"] for r in results),
        seconds=max(r["seconds"] for r in results),
        rpcs=sum(r["rpcs"] for r in results),
        writer_cpu_s=sum(r["cpu_seconds"] for r in results),
        server_cpu_s=server_cpu,
        pg_cpu_s=pg_cpu,
    )


async def _inserts(setup: Setup, rounds: int) -> dict[str, float]:
    sample = await setup.data.sample(HOT_USERS + 70_000 * len(COLD) * rounds, 0)
    hot = [str(u) for u in sample.active[:HOT_USERS]]
    fresh = [str(u) for u in sample.active[HOT_USERS:]]
    per_run = len(fresh) // (rounds * len(COLD))
    results: dict[str, list[Outcome]] = {kind: [] for kind in KINDS}
    names = list(KINDS)
    await _setup_tables(setup.data)
    try:
        taken = 0
        for index in range(rounds):
            shift = index % len(names)  # rotated each round: drift favours no kind
            for kind in names[shift:] + names[:shift]:
                if kind in COLD:
                    ids, taken = fresh[taken : taken + per_run], taken + per_run
                else:
                    ids = hot
                outcome = await _insert_run(setup, kind, ids, index + 1)
                results[kind].append(outcome)
                print(
                    f"  {kind:<13} {outcome.per_s:8,.0f} rows/s  "
                    f"{outcome.cpu_us_per_row():6,.0f} µs CPU/row  {outcome.rpcs} RPCs",
                    flush=True,
                )
    finally:
        await _teardown_tables(setup.data)

    def rate(kind: str) -> float:
        return median([o.per_s for o in results[kind]])

    def cpu(kind: str) -> float:
        return median([o.cpu_us_per_row() for o in results[kind]])

    def part(kind: str, name: str) -> float:
        return median([getattr(o, name) * 1e6 / max(1, o.inserts) for o in results[kind]])

    figures = {f"{kind}_rows_per_s": rate(kind) for kind in KINDS}
    figures.update({f"{kind}_cpu_us_per_row": cpu(kind) for kind in KINDS})
    for kind in ("replica_cold", "plain_cold", "fk_cold", "rpc_cold"):
        for name in ("writer_cpu_s", "server_cpu_s", "pg_cpu_s"):
            figures[f"{kind}_{name.removesuffix('_cpu_s')}_us_per_row"] = part(kind, name)
    figures.update(
        replica_cold_vs_fk_cold=rate("replica_cold") / rate("fk_cold"),
        replica_warm_vs_fk_warm=rate("replica_warm") / rate("fk_warm"),
        rpc_cold_vs_fk_cold=rate("rpc_cold") / rate("fk_cold"),
        replica_cold_cpu_vs_plain_cold=cpu("replica_cold") / cpu("plain_cold"),
        replica_warm_cpu_vs_plain_warm=cpu("replica_warm") / cpu("plain_warm"),
        replica_rpcs=float(sum(o.rpcs for o in results["replica_cold"] + results["replica_warm"])),
    )
    return figures


async def _loads(setup: Setup, probe: str, count: int = 2) -> dict[str, float]:
    runs = [await _subprocess("--load", setup.options(probe=probe)) for _ in range(count)]
    users = median([r["users"] for r in runs])
    slow_fetch = await _subprocess(
        "--load",
        setup.options(probe=probe, consumer_options={"fetch_max_wait_ms": SLOW_FETCH_MS}),
    )
    return {
        f"replica_idle_cpu_ms_per_s_fetch_wait_{SLOW_FETCH_MS}": slow_fetch["idle_cpu_share"]
        * 1000,
        "replica_users": users,
        "replica_load_s": median([r["load_s"] for r in runs]),
        "replica_array_bytes_per_user": median([r["array_bytes"] for r in runs]) / users,
        "replica_rss_growth_bytes_per_user": median([r["rss_growth_bytes"] for r in runs]) / users,
        "replica_process_rss_mib": median([r["rss_after_bytes"] for r in runs]) / 2**20,
        "replica_hit_us": median([r["hit_us"] for r in runs]),
        "replica_idle_cpu_ms_per_s": median([r["idle_cpu_share"] for r in runs]) * 1000,
    }


async def _position(conn: asyncpg.Connection) -> int:
    position: int = await conn.fetchval("SELECT last_position FROM event_position")
    return position


async def _visible(setup: Setup) -> dict[str, float]:
    """CreateUser / DeleteUser returned -> this process's replica applied it."""
    created: list[int] = []
    deleted: list[int] = []
    conn = await asyncpg.connect(setup.data.url)
    try:
        async with (
            _client(setup.options(), replica=True) as client,
            grpc.aio.insecure_channel(setup.server.target) as channel,
        ):
            admin = admin_pb2_grpc.UserAdminServiceStub(channel)
            md = setup.server.admin_md

            async def applied(since: float) -> int:
                position = await _position(conn)
                while True:
                    stats = client.replica_stats()
                    if stats is not None and stats.position >= position:
                        return int((time.perf_counter() - since) * 1e6)
                    await asyncio.sleep(0.0005)

            for index in range(SAMPLES):
                reply = await admin.CreateUser(
                    admin_pb2.CreateUserRequest(username=f"bench_{uuid.uuid4().hex[:12]}_{index}"),
                    metadata=md,
                    timeout=10,
                )
                created.append(await applied(time.perf_counter()))
                await admin.DeleteUser(
                    admin_pb2.DeleteUserRequest(user_id=reply.user.id), metadata=md, timeout=10
                )
                deleted.append(await applied(time.perf_counter()))
                await asyncio.sleep(0.005)
    finally:
        await conn.close()
    return {
        "create_visible_p50_ms": percentile(created, 50) / 1000,
        "create_visible_p99_ms": percentile(created, 99) / 1000,
        "delete_visible_p50_ms": percentile(deleted, 50) / 1000,
        "delete_visible_p99_ms": percentile(deleted, 99) / 1000,
    }


async def _create_topics(bootstrap: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        await admin.start()
        existing = set(await admin.list_topics())
        new = [
            NewTopic(topic, num_partitions=6, replication_factor=1)
            for topic in (CREATED_TOPIC, DELETED_TYPE_TOPIC)
            if topic not in existing
        ]
        if new:
            await admin.create_topics(new)
    finally:
        await admin.close()


async def run(users: int = USERS, seconds: float = SECONDS, rounds: int = 2) -> dict[str, float]:
    figures: dict[str, float] = {}
    async with Dataset(users, data_dir=DATA_DIR / "client_replica") as data:
        broker = EmbeddedKafka()
        await asyncio.to_thread(broker.start)
        server = Server(data.url, broker.bootstrap_servers)
        try:
            await _create_topics(broker.bootstrap_servers)
            await server.start()
            setup = Setup(data, server, broker.bootstrap_servers, seconds)
            probe = str((await data.sample(1000, 0)).active[0])
            print("  load and memory", flush=True)
            figures.update(await _loads(setup, probe))
            print("  inserts", flush=True)
            figures.update(await _inserts(setup, rounds))
            print("  create -> visible", flush=True)
            figures.update(await _visible(setup))
        finally:
            await server.stop()
            await asyncio.to_thread(broker.close)
    return figures


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="A local replica in the client (#30)")
    parser.add_argument("--users", type=int, default=USERS)
    parser.add_argument("--seconds", type=float, default=SECONDS)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--writer", metavar="JSON", help=argparse.SUPPRESS)
    parser.add_argument("--load", metavar="JSON", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        uvloop.run(_serve())
        return
    if args.writer or args.load:
        work = _writer if args.writer else _load
        result = uvloop.run(work(json.loads(args.writer or args.load)))
        print(json.dumps(result))
        return
    started = time.monotonic()
    figures = uvloop.run(run(args.users, args.seconds, args.rounds))
    print(
        f"bench_client_replica on {platform.node()} ({os.cpu_count()} cores),"
        f" python {sys.version.split()[0]}: {args.users:,} users, {PROCESSES} writer"
        f" processes x {WRITERS} writers, {args.seconds:g} s runs, {args.rounds} round(s),"
        f" {SAMPLES} create/delete samples; {time.monotonic() - started:.0f} s in all"
    )
    for name, value in figures.items():
        print(f"  {name:<36} {value:12.2f}")


if __name__ == "__main__":
    main()
