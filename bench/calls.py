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


class Stream:
    """The skewed sequence as one stream over all runs: each run is sent the next
    `count` bodies, so no run replays the calls of an earlier one until the sequence
    wraps. (Each grpcload connection starts at a fixed offset of the bodies it is
    given: handing every run the same list replays its prefix, whose ids the server
    has cached since the first run, and the load would be almost all cache hits.)"""

    def __init__(self, bodies: list[bytes]) -> None:
        self._bodies = bodies
        self._next = 0
        self.sent = 0  # bodies handed out, over all runs
        self.wrapped = False

    def take(self, count: int) -> list[bytes]:
        n = len(self._bodies)
        count = max(1, min(count, n))
        start, end = self._next, self._next + count
        self._next = end % n
        self.sent += count
        self.wrapped = self.wrapped or end > n
        if end <= n:
            return self._bodies[start:end]
        return self._bodies[start:] + self._bodies[: end - n]


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
