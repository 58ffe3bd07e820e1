"""SyncAuthClient: how a synchronous client should reach auth-service, measured.

Three mechanisms, each driven by 32 threads of one process against a real
`auth-service serve` (its own process) on embedded PostgreSQL:

- `sync-stub`: grpc's synchronous stub, one blocking UserExists per lookup, in each
  caller's thread (what a thin sync client does: no cache, coalescing or batching);
- `aio-thread`: an `AuthClient` on grpc.aio in one event-loop thread, every call
  handed to it with `asyncio.run_coroutine_threadsafe`;
- `SyncAuthClient`: the shipped client: `AuthClient`'s code in one event-loop thread
  over grpc's synchronous channel, cache hits answered in the caller's thread.

Per mechanism: client CPU (the whole process: callers, loop thread and grpc's
threads) and server CPU per uncached lookup of distinct ids, RPCs per lookup, RPCs
per round of 32 concurrent lookups of one id (coalescing), the cost of a cache hit,
and whether a child forked after the parent used the client can make a new one.
Each mechanism runs in a fresh subprocess, so its CPU is its own.

    .venv/bin/python -m bench.sync_client            # or: python bench/sync_client.py

Prints a table; `run()` returns the figures. Never asserted in tests.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import grpc

if __package__ in {None, ""}:  # run as a script: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from auth_client import AuthClient, SyncAuthClient
from auth_client.contract import auth_pb2, auth_pb2_grpc

THREADS = 32
PER_THREAD = 250  # distinct uncached lookups per thread
ROUNDS = 40  # rounds of THREADS concurrent lookups of one (uncached) id
HIT_OPS = 100_000
MECHANISMS = ("sync-stub", "aio-thread", "SyncAuthClient")


# -- the three mechanisms, as a caller thread sees them ------------------------


class _Mechanism:
    hits = True

    def exists(self, user_id: str) -> bool:
        raise NotImplementedError

    def rpcs(self) -> int:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class _SyncStub(_Mechanism):
    hits = False

    def __init__(self, target: str, token: str) -> None:
        self._channel = grpc.insecure_channel(target)
        self._stub = auth_pb2_grpc.AuthServiceStub(self._channel)
        self._metadata = (("authorization", f"Bearer {token}"),)
        self._lock = threading.Lock()
        self._rpcs = 0

    def exists(self, user_id: str) -> bool:
        with self._lock:
            self._rpcs += 1
        reply = self._stub.UserExists(
            auth_pb2.UserExistsRequest(user_id=user_id), timeout=5, metadata=self._metadata
        )
        return bool(reply.exists)

    def rpcs(self) -> int:
        return self._rpcs

    def close(self) -> None:
        self._channel.close()


class _AioThread(_Mechanism):
    def __init__(self, target: str, token: str) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._client = AuthClient(target, token=token, timeout=5)
        self._submit(self._client.start)

    def _submit(self, fn: Callable[..., Any], *args: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(fn(*args), self._loop).result()

    def exists(self, user_id: str) -> bool:
        return bool(self._submit(self._client.user_exists, user_id))

    def rpcs(self) -> int:
        return self._client.stats().rpcs

    def close(self) -> None:
        self._submit(self._client.aclose)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()


class _Shipped(_Mechanism):
    def __init__(self, target: str, token: str) -> None:
        self._client = SyncAuthClient(target, token=token, timeout=5)
        self._client.start()

    def exists(self, user_id: str) -> bool:
        return self._client.user_exists(user_id)

    def rpcs(self) -> int:
        return self._client.stats().rpcs

    def close(self) -> None:
        self._client.close()


_MAKE: dict[str, Callable[[str, str], _Mechanism]] = {
    "sync-stub": _SyncStub,
    "aio-thread": _AioThread,
    "SyncAuthClient": _Shipped,
}


# -- one mechanism, in its own process ------------------------------------------


def _threads(work: Callable[[int], None], count: int = THREADS) -> None:
    with concurrent.futures.ThreadPoolExecutor(count) as pool:
        for future in [pool.submit(work, index) for index in range(count)]:
            future.result()


def _distinct(client: _Mechanism, ids: list[str]) -> dict[str, float]:
    wrong: list[str] = []

    def work(index: int) -> None:
        mine = ids[index * PER_THREAD : (index + 1) * PER_THREAD]
        wrong.extend(user_id for user_id in mine if not client.exists(user_id))

    rpcs, cpu, wall = client.rpcs(), time.process_time(), time.perf_counter()
    _threads(work)
    lookups = THREADS * PER_THREAD
    assert not wrong, f"{len(wrong)} wrong answers"
    return {
        "client_cpu_us_per_lookup": (time.process_time() - cpu) / lookups * 1e6,
        "lookups_per_s": lookups / (time.perf_counter() - wall),
        "rpcs_per_lookup": (client.rpcs() - rpcs) / lookups,
    }


def _coalescing(client: _Mechanism, ids: list[str]) -> float:
    """RPCs per round of THREADS concurrent lookups of one uncached id."""
    barrier = threading.Barrier(THREADS)

    def work(_index: int) -> None:
        for user_id in ids[:ROUNDS]:
            barrier.wait()
            assert client.exists(user_id)

    rpcs = client.rpcs()
    _threads(work)
    return (client.rpcs() - rpcs) / ROUNDS


def _hits(client: _Mechanism, user_id: str) -> dict[str, float]:
    assert client.exists(user_id)
    started = time.perf_counter()
    for _ in range(HIT_OPS):
        client.exists(user_id)
    alone = (time.perf_counter() - started) / HIT_OPS * 1e6
    per_thread = HIT_OPS // THREADS

    def work(_index: int) -> None:
        for _ in range(per_thread):
            client.exists(user_id)

    cpu = time.process_time()
    _threads(work)
    shared = (time.process_time() - cpu) / (per_thread * THREADS) * 1e6
    return {"hit_us": alone, "hit_cpu_us_32_threads": shared}


def _fork_probe(name: str, target: str, token: str, user_id: str) -> str:
    """Use a client, fork, and make a new one in the child: "ok" or what failed."""
    client = _MAKE[name](target, token)
    assert client.exists(user_id)
    pid = os.fork()
    if pid == 0:  # the child: its own client, a short deadline
        code = 1
        try:
            child = _MAKE[name](target, token)
            code = 0 if child.exists(str(uuid.uuid4())) is False else 1
        except BaseException:  # reported as the exit status
            code = 2
        os._exit(code)
    status = 0
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        time.sleep(0.05)
    else:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        return "child hung"
    client.close()
    if os.WIFSIGNALED(status):
        return f"child killed by {signal.Signals(os.WTERMSIG(status)).name}"
    code = os.WEXITSTATUS(status)
    return {0: "ok", 1: "child: wrong answer", 2: "child: lookup failed"}.get(code, str(code))


def worker(name: str, target: str, token: str, ids: list[str]) -> dict[str, Any]:
    client = _MAKE[name](target, token)
    try:
        client.exists(ids[-1])  # connect before measuring
        figures: dict[str, Any] = _distinct(client, ids[: THREADS * PER_THREAD])
        figures["rpcs_per_round_of_32_same_id"] = _coalescing(
            client, ids[THREADS * PER_THREAD : THREADS * PER_THREAD + ROUNDS]
        )
        if client.hits:
            figures.update(_hits(client, ids[-1]))
        return figures
    finally:
        client.close()


# -- the driver --------------------------------------------------------------------


async def _seed(url: str, count: int) -> list[str]:
    ids = [uuid.uuid4() for _ in range(count)]
    conn = await asyncpg.connect(url)
    try:
        await conn.copy_records_to_table(
            "users",
            records=[(uid, f"s_{uid.hex[:16]}", "sync bench") for uid in ids],
            columns=["id", "username", "display_name"],
        )
    finally:
        await conn.close()
    return [str(uid) for uid in ids]


def _subprocess(*args: str, timeout: float = 300) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "bench.sync_client", *args],
        cwd=Path(__file__).resolve().parents[1],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{args[:2]} failed:\n{proc.stderr[-3000:]}")
    return proc.stdout.strip().splitlines()[-1]


async def run() -> dict[str, float]:
    """Figures keyed `<mechanism>.<figure>` (fork: 1.0 = the child works)."""
    from auth_service.local.embedded import EmbeddedPostgres  # noqa: PLC0415
    from auth_service.store.migrations import migrate  # noqa: PLC0415
    from bench.server import Features, ServerProcess  # noqa: PLC0415

    per_mechanism = THREADS * PER_THREAD + ROUNDS + 1
    pg = EmbeddedPostgres()
    await asyncio.to_thread(pg.start)
    try:
        await asyncio.to_thread(migrate, pg.url)
        ids = await _seed(pg.url, per_mechanism * len(MECHANISMS) + 1)
        env = {"STATE_INDEX_MAX_USERS": "0"}  # every uncached id is a query
        async with ServerProcess(pg.url, Features(), env=env) as server:
            figures: dict[str, float] = {}
            for index, name in enumerate(MECHANISMS):
                mine = ids[index * per_mechanism : (index + 1) * per_mechanism]
                with tempfile.NamedTemporaryFile("w", suffix=".ids", delete=False) as file:
                    file.write("\n".join(mine))
                try:
                    cpu = server.cpu_seconds()
                    out = await asyncio.to_thread(
                        _subprocess, "--worker", name, server.target, server.read_token, file.name
                    )
                    server_cpu = server.cpu_seconds() - cpu
                finally:
                    Path(file.name).unlink()
                for key, value in json.loads(out).items():
                    figures[f"{name}.{key}"] = value
                # Per caller lookup that missed the cache (the distinct ids and the
                # rounds of one id); cache hits cost the server nothing.
                misses = THREADS * PER_THREAD + THREADS * ROUNDS
                figures[f"{name}.server_cpu_us_per_uncached_lookup"] = server_cpu / misses * 1e6
                probe = await asyncio.to_thread(
                    _subprocess, "--fork-probe", name, server.target, server.read_token, ids[-1]
                )
                figures[f"{name}.fork_child_works"] = 1.0 if probe == "ok" else 0.0
                print(f"{name}: fork probe: {probe}", file=sys.stderr)
            return figures
    finally:
        await asyncio.to_thread(pg.close)


def _report(figures: dict[str, float]) -> str:
    rows = [
        ("client CPU per uncached lookup, 32 threads", "client_cpu_us_per_lookup", "µs"),
        ("server CPU per uncached lookup", "server_cpu_us_per_uncached_lookup", "µs"),
        ("uncached lookups per second, 32 threads", "lookups_per_s", "/s"),
        ("RPCs per uncached lookup (batching)", "rpcs_per_lookup", ""),
        ("RPCs per 32 concurrent lookups of one id", "rpcs_per_round_of_32_same_id", ""),
        ("cache hit, one thread", "hit_us", "µs"),
        ("cache hit CPU, 32 threads", "hit_cpu_us_32_threads", "µs"),
        ("child forked after use makes a working client", "fork_child_works", ""),
    ]
    width = max(len(label) for label, _, _ in rows)
    head = f"  {'':<{width}}" + "".join(f"  {name:>15}" for name in MECHANISMS)
    lines = [
        (
            f"SyncAuthClient mechanisms — Python {platform.python_version()}, grpcio "
            f"{grpc.__version__}, {os.cpu_count()} cores, {THREADS} caller threads"
        ),
        "",
        head,
    ]
    for label, key, unit in rows:
        cells = []
        for name in MECHANISMS:
            value = figures.get(f"{name}.{key}")
            if value is None:
                cells.append("—")
            elif key == "fork_child_works":
                cells.append("yes" if value else "NO")
            else:
                cells.append(
                    f"{value:,.2f} {unit}".strip() if value < 100 else f"{value:,.0f} {unit}"
                )
        lines.append(f"  {label:<{width}}" + "".join(f"  {cell:>15}" for cell in cells))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--worker", nargs=4, metavar=("MECHANISM", "TARGET", "TOKEN", "IDS"))
    parser.add_argument("--fork-probe", nargs=4, metavar=("MECHANISM", "TARGET", "TOKEN", "ID"))
    args = parser.parse_args(argv)
    if args.worker:
        name, target, token, path = args.worker
        print(json.dumps(worker(name, target, token, Path(path).read_text().split())))
    elif args.fork_probe:
        print(_fork_probe(*args.fork_probe))
    else:
        print(_report(asyncio.run(run())))


if __name__ == "__main__":
    main()
