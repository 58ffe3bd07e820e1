"""One process of a messaging service's writers, for bench/inserts.py: `WRITERS`
concurrent request handlers inserting rows that reference users, the FK way or the
validated way (`require_user` through its own AuthClient), for a fixed time.

    python -m bench.insert_writer '<json options>'

Prints one JSON line: inserts, errors, seconds, whether the senders ran out, and
the client's RPCs. Services run their writers in several processes; so does the
benchmark.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import uvloop

from auth_client import AuthClient, CacheConfig

WRITERS = 16  # concurrent request handlers per process
POOL_SIZE = 4


def _senders(options: dict[str, Any]) -> Iterator[uuid.UUID]:
    ids = [uuid.UUID(i) for i in Path(options["ids_file"]).read_text().split()]
    if options["hot"]:
        rng = random.Random(options["seed"])
        return (rng.choice(ids) for _ in iter(int, 1))
    return iter(ids)


async def _drive(
    senders: Iterator[uuid.UUID], insert: Callable[[uuid.UUID], Awaitable[None]], seconds: float
) -> dict[str, Any]:
    inserts = errors = 0
    exhausted = False
    end = time.perf_counter() + seconds

    async def writer() -> None:
        nonlocal inserts, errors, exhausted
        while time.perf_counter() < end:
            sender = next(senders, None)
            if sender is None:
                exhausted = True
                return
            try:
                await insert(sender)
            except Exception:
                errors += 1
            else:
                inserts += 1

    started, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(writer() for _ in range(WRITERS)))
    return {
        "inserts": inserts,
        "errors": errors,
        "seconds": time.perf_counter() - started,
        "cpu_seconds": time.process_time() - cpu,  # this process: asyncpg + AuthClient
        "exhausted": exhausted,
    }


async def main(options: dict[str, Any]) -> dict[str, Any]:
    kind = options["kind"]  # fk | validated | plain
    url = options["fk_url"] if kind == "fk" else options["plain_url"]
    table = "bench_messages_fk" if kind == "fk" else "messages"
    sql = f"INSERT INTO {table} (sender_id, body) VALUES ($1, $2)"
    pool = await asyncpg.create_pool(url, min_size=POOL_SIZE, max_size=POOL_SIZE)
    client = AuthClient(
        options["target"],
        token=options["token"],
        timeout=2.0,
        cache=CacheConfig(max_size=1_000_000, positive_ttl=3600, negative_ttl=3600),
    )
    try:
        async with client:

            async def insert(sender: uuid.UUID) -> None:
                if kind == "validated":
                    await client.require_user(sender)
                await pool.execute(sql, sender, "hello")

            senders = _senders(options)
            if options["hot"]:
                hot = [uuid.UUID(i) for i in Path(options["ids_file"]).read_text().split()]
                if kind == "validated":
                    await client.users_exist(hot)  # a warm cache
                await _drive(senders, insert, options["warmup"])
            outcome = await _drive(senders, insert, options["seconds"])
            outcome["rpcs"] = client.stats().rpcs
            return outcome
    finally:
        await pool.close()


if __name__ == "__main__":
    result = uvloop.run(main(json.loads(sys.argv[1])))
    print(json.dumps(result))
