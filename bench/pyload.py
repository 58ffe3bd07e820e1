"""Fallback load generator: one process sending one gRPC unary request over and
over with grpc.aio (raw bytes in and out), as `python -m bench.pyload ARGS_JSON`.

Used only when h2load is missing. A Python generator manages ~3k requests/s per
process on the machines this was written on, so it can be the bottleneck: the
report says which generator ran.
"""

from __future__ import annotations

import asyncio
import base64
import json
import sys
import time
from typing import TYPE_CHECKING, Any

import grpc

from bench.load import LoadResult

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine

    from bench.load import LoadSpec


def encode_args(spec: LoadSpec, message: bytes) -> str:
    per_process = None if spec.rate is None else spec.rate / spec.processes
    return json.dumps(
        {
            "target": spec.target,
            "path": spec.path,
            "body": base64.b64encode(message).decode(),
            "headers": [list(h) for h in spec.headers],
            "connections": spec.connections,
            "concurrency": spec.connections * spec.streams,
            "duration": spec.duration,
            "rate": per_process,
            "latencies": spec.latencies,
        }
    )


def decode_result(raw: bytes) -> LoadResult:
    data = json.loads(raw)
    return LoadResult(
        done=data["done"],
        ok=data["ok"],
        failed=data["failed"],
        seconds=data["seconds"],
        rps=data["rps"],
        latencies_us=data["latencies_us"],
    )


async def _run(args: dict[str, Any]) -> dict[str, Any]:
    body = base64.b64decode(args["body"])
    metadata = tuple((k, v) for k, v in args["headers"])
    channels = [
        grpc.aio.insecure_channel(args["target"], options=[("grpc.use_local_subchannel_pool", 1)])
        for _ in range(args["connections"])
    ]
    calls = [ch.unary_unary(args["path"], None, None) for ch in channels]
    counts = {"done": 0, "ok": 0}
    latencies: list[int] = []
    keep = args["latencies"]
    end = time.perf_counter() + args["duration"]

    async def one(index: int) -> None:
        started = time.perf_counter()
        try:
            await calls[index % len(calls)](body, metadata=metadata, timeout=10)
        except grpc.aio.AioRpcError:
            pass
        else:
            counts["ok"] += 1
            if keep:
                latencies.append(int((time.perf_counter() - started) * 1e6))
        counts["done"] += 1

    async def closed_loop(index: int) -> None:
        while time.perf_counter() < end:
            await one(index)

    started = time.perf_counter()
    if args["rate"] is None:
        await asyncio.gather(*(closed_loop(i) for i in range(args["concurrency"])))
    else:
        await _open_loop(one, 1 / args["rate"], started, end)
    seconds = time.perf_counter() - started
    for channel in channels:
        await channel.close(None)
    return {
        "done": counts["done"],
        "ok": counts["ok"],
        "failed": counts["done"] - counts["ok"],
        "seconds": seconds,
        "rps": counts["done"] / seconds,
        "latencies_us": latencies,
    }


async def _open_loop(
    one: Callable[[int], Coroutine[Any, Any, None]], interval: float, started: float, end: float
) -> None:
    """Start call `one(n)` every `interval` seconds until `end`, whatever the
    answers do, then wait for the calls in flight."""
    tasks: set[asyncio.Task[None]] = set()
    sent = 0
    while (now := time.perf_counter()) < end:
        while started + sent * interval <= now:
            task = asyncio.create_task(one(sent))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            sent += 1
        await asyncio.sleep(max(0.0, started + sent * interval - time.perf_counter()))
    await asyncio.gather(*tasks)


def main() -> None:
    args = json.loads(sys.argv[1])
    try:
        import uvloop  # noqa: PLC0415
    except ImportError:  # pragma: no cover
        result = asyncio.run(_run(args))
    else:
        result = uvloop.run(_run(args))
    sys.stdout.write(json.dumps(result))


if __name__ == "__main__":
    main()
