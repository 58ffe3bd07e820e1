"""What the load generators send: the methods, request bodies (skewed or never
asked before), and the load shape from the command-line options. Shared by the
serving, batch, workers and tracing benchmarks."""

from __future__ import annotations

import random

from grpc_health.v1 import health_pb2

from auth_client.contract import auth_pb2
from bench.context import Context
from bench.load import LoadSpec
from bench.measure import call_raw
from bench.server import ServerProcess

USER_EXISTS = "/auth.v1.AuthService/UserExists"
HEALTH = "/grpc.health.v1.Health/Check"
ZIPF_EXPONENT = 1.0


def zipf_sequence(ids: list[str], length: int, seed: int = 14) -> list[str]:
    """`length` draws from `ids` with p(rank k) proportional to 1/k**ZIPF_EXPONENT."""
    rng = random.Random(seed)
    ranked = ids[:]
    rng.shuffle(ranked)
    weights = [1.0 / (k**ZIPF_EXPONENT) for k in range(1, len(ranked) + 1)]
    return rng.choices(ranked, weights=weights, k=length)


def user_exists_bodies(ids: list[str]) -> list[bytes]:
    return [auth_pb2.UserExistsRequest(user_id=i).SerializeToString() for i in ids]


async def check_active(server: ServerProcess, ids: list[str]) -> None:
    """One real call per id of a small sample: they are active users."""
    expected = auth_pb2.UserExistsResponse(exists=True, state=auth_pb2.USER_STATE_ACTIVE)
    for user_id in ids:
        body = auth_pb2.UserExistsRequest(user_id=user_id).SerializeToString()
        reply = await call_raw(server.target, USER_EXISTS, body, server.metadata)
        if auth_pb2.UserExistsResponse.FromString(reply) != expected:
            raise RuntimeError(f"UserExists({user_id}) answered {reply!r}, expected active")


async def health_body(server: ServerProcess) -> bytes:
    body = bytes(health_pb2.HealthCheckRequest().SerializeToString())
    reply = await call_raw(server.target, HEALTH, body, server.metadata)
    if health_pb2.HealthCheckResponse.FromString(reply).status != 1:
        raise RuntimeError("Health/Check is not SERVING")
    return body


def spec(
    ctx: Context, server: ServerProcess, path: str, bodies: list[bytes], **kw: object
) -> LoadSpec:
    """A load of `bodies` on `path` of `server`, shaped by the options unless `kw` says."""
    o = ctx.options
    values: dict[str, object] = {
        "target": server.target,
        "path": path,
        "bodies": bodies,
        "response_sizes": [0] * len(bodies),
        "headers": server.metadata,
        "connections": o.connections,
        "streams": o.streams,
        "duration": o.duration,
        "workers": o.processes,
    }
    values.update(kw)
    return LoadSpec(**values)  # type: ignore[arg-type]


class Distinct:
    """Fresh ids, never asked before, for each of `runs` distinct-id runs: a share of
    what the sample has left (the other benchmarks need theirs). A run that would
    need more ids than its share repeats them, and `repeated` says so."""

    def __init__(self, ctx: Context, runs: int, share: float = 0.4) -> None:
        self._ctx = ctx
        self._per_run = max(1000, int(ctx.remaining("active") * share) // runs)
        self.repeated = False

    def bodies(self, count: int) -> list[bytes]:
        if count > self._per_run:
            self.repeated = True
        return user_exists_bodies(self._ctx.take("active", min(count, self._per_run)))
