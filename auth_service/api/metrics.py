"""Prometheus metrics: per-RPC counters and latency, database pool gauges, and the
HTTP endpoint that exposes them (plus everything else in the default registry: the
relay's outbox metrics, `auth_client` counters when a client runs in-process).

RPC metrics follow the go-grpc-middleware Prometheus provider exactly — the
convention most gRPC dashboards and alerts query — with one context label,
`caller` (the token's caller name; a bounded set), on every family, as that
provider's context labels add one:

    grpc_server_started_total{grpc_type, grpc_service, grpc_method, caller}
    grpc_server_msg_received_total{grpc_type, grpc_service, grpc_method, caller}
    grpc_server_msg_sent_total{grpc_type, grpc_service, grpc_method, caller}
    grpc_server_handled_total{grpc_type, grpc_service, grpc_method, grpc_code, caller}
    grpc_server_handling_seconds{grpc_type, grpc_service, grpc_method, caller}  (histogram)

`grpc_code` is spelled as Go's `codes.Code.String()` does (`OK`, `NotFound`,
`Unavailable`, `ResourceExhausted`, ...). Every call that reaches the server's
handlers is counted, including those refused for their size or by a limit.
Series for the configured callers exist from the start (every code at 0), as the
provider's `InitializeMetrics` does.

The hot path does no label lookups and takes no locks: `MethodMetrics` keeps plain
integers per caller and status code (a call costs a few dict lookups, a bisect and
some additions, about a microsecond); a collector turns them into Prometheus
families when /metrics is scraped.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import itertools
import logging
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from types import TracebackType
from typing import Self

import asyncpg
import grpc
from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from auth_service.addresses import format_host_port, local_address, parse_host_port
from auth_service.store.lookup import StateLookup

log = logging.getLogger(__name__)

_RPC_LABELS = ("grpc_type", "grpc_service", "grpc_method")
# Sub-millisecond buckets: a cached point lookup answers in well under 1 ms.
LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)

# grpc_code as Go's codes.Code.String() spells it (go-grpc-middleware's labels).
GRPC_CODE: dict[grpc.StatusCode, str] = {
    grpc.StatusCode.OK: "OK",
    grpc.StatusCode.CANCELLED: "Canceled",
    grpc.StatusCode.UNKNOWN: "Unknown",
    grpc.StatusCode.INVALID_ARGUMENT: "InvalidArgument",
    grpc.StatusCode.DEADLINE_EXCEEDED: "DeadlineExceeded",
    grpc.StatusCode.NOT_FOUND: "NotFound",
    grpc.StatusCode.ALREADY_EXISTS: "AlreadyExists",
    grpc.StatusCode.PERMISSION_DENIED: "PermissionDenied",
    grpc.StatusCode.RESOURCE_EXHAUSTED: "ResourceExhausted",
    grpc.StatusCode.FAILED_PRECONDITION: "FailedPrecondition",
    grpc.StatusCode.ABORTED: "Aborted",
    grpc.StatusCode.OUT_OF_RANGE: "OutOfRange",
    grpc.StatusCode.UNIMPLEMENTED: "Unimplemented",
    grpc.StatusCode.INTERNAL: "Internal",
    grpc.StatusCode.UNAVAILABLE: "Unavailable",
    grpc.StatusCode.DATA_LOSS: "DataLoss",
    grpc.StatusCode.UNAUTHENTICATED: "Unauthenticated",
}


class _CallerStats:
    __slots__ = ("buckets", "codes", "received", "sent", "started", "sum")

    def __init__(self) -> None:
        self.started = 0
        self.received = 0
        self.sent = 0
        self.buckets = [0] * (len(LATENCY_BUCKETS) + 1)  # the last one is +Inf
        self.sum = 0.0
        self.codes: dict[grpc.StatusCode, int] = {}


class MethodMetrics:
    """The metrics of one RPC method: plain counters, turned into Prometheus
    families only when scraped.

    Only the event loop's thread records (one server per loop); a scrape from
    another thread reads ints the GIL keeps whole, so no locks on the hot path.
    """

    __slots__ = ("_by_caller", "method", "service")

    def __init__(self, service: str, method: str) -> None:
        self.service = service
        self.method = method
        self._by_caller: dict[str, _CallerStats] = {}

    def _stats(self, caller: str) -> _CallerStats:
        stats = self._by_caller.get(caller)
        if stats is None:
            stats = self._by_caller[caller] = _CallerStats()
        return stats

    def start(self, caller: str) -> None:
        """A call (and its one request message) arrived from `caller`."""
        stats = self._stats(caller)
        stats.started += 1
        stats.received += 1

    def done(self, caller: str, code: grpc.StatusCode, seconds: float) -> None:
        stats = self._stats(caller)
        # `le` buckets: the first bound >= seconds (bisect_left), else +Inf.
        stats.buckets[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
        stats.sum += seconds
        codes = stats.codes
        codes[code] = codes.get(code, 0) + 1
        if code is grpc.StatusCode.OK:
            stats.sent += 1

    def callers(self) -> list[tuple[str, _CallerStats]]:
        return list(self._by_caller.items())


_methods: dict[tuple[str, str], MethodMetrics] = {}
_methods_lock = threading.Lock()
_declared_callers: set[str] = set()


def method_metrics(service: str, method: str) -> MethodMetrics:
    """The (process-wide) metrics of `service/method`; created on first use."""
    key = (service, method)
    found = _methods.get(key)
    if found is None:
        with _methods_lock:
            found = _methods.setdefault(key, MethodMetrics(service, method))
    return found


def declare_callers(names: Iterable[str]) -> None:
    """Callers whose series exist (at 0) before their first call: the configured
    ones, so dashboards and `rate()` see them from the start."""
    with _methods_lock:
        _declared_callers.update(names)


_LE = [*(repr(float(bound)) for bound in LATENCY_BUCKETS), "+Inf"]
_EMPTY = _CallerStats()


class _RpcCollector(Collector):
    """grpc_server_* families from every MethodMetrics, at scrape time."""

    def collect(self) -> Iterator[Metric]:
        labels = (*_RPC_LABELS, "caller")
        started = CounterMetricFamily(
            "grpc_server_started", "Total number of RPCs started on the server.", labels=labels
        )
        received = CounterMetricFamily(
            "grpc_server_msg_received",
            "Total number of RPC stream messages received on the server.",
            labels=labels,
        )
        sent = CounterMetricFamily(
            "grpc_server_msg_sent",
            "Total number of gRPC stream messages sent by the server.",
            labels=labels,
        )
        handled = CounterMetricFamily(
            "grpc_server_handled",
            "Total number of RPCs completed on the server, regardless of success or failure.",
            labels=(*_RPC_LABELS, "grpc_code", "caller"),
        )
        seconds = HistogramMetricFamily(
            "grpc_server_handling_seconds",
            "Histogram of response latency (seconds) of gRPC that had been application-level "
            "handled by the server.",
            labels=labels,
        )
        with _methods_lock:
            declared = set(_declared_callers)
        for m in list(_methods.values()):
            rpc = ["unary", m.service, m.method]
            seen = dict(m.callers())
            for caller in sorted(declared | set(seen)):
                stats = seen.get(caller, _EMPTY)
                series = [*rpc, caller]
                started.add_metric(series, stats.started)
                received.add_metric(series, stats.received)
                sent.add_metric(series, stats.sent)
                codes = dict(stats.codes)
                for code, name in GRPC_CODE.items():
                    handled.add_metric([*rpc, name, caller], codes.get(code, 0))
                cumulative = itertools.accumulate(list(stats.buckets))
                seconds.add_metric(series, list(zip(_LE, cumulative, strict=True)), stats.sum)
        yield from (started, received, sent, handled, seconds)


REGISTRY.register(_RpcCollector())


class _PoolCollector(Collector):
    """Database pool gauges, read from the live asyncpg pools at scrape time."""

    def __init__(self) -> None:
        self.pools: list[asyncpg.Pool] = []

    def collect(self) -> Iterator[GaugeMetricFamily]:
        pools = list(self.pools)
        size = sum(p.get_size() for p in pools)
        idle = sum(p.get_idle_size() for p in pools)
        yield GaugeMetricFamily("db_pool_size", "Open connections in the database pool", size)
        yield GaugeMetricFamily(
            "db_pool_in_use", "Pool connections checked out by a request", size - idle
        )
        yield GaugeMetricFamily("db_pool_idle", "Open pool connections waiting for work", idle)
        yield GaugeMetricFamily(
            "db_pool_max_size",
            "Most connections the pool may open (DB_POOL_MAX_SIZE)",
            sum(p.get_max_size() for p in pools),
        )


_POOLS = _PoolCollector()
REGISTRY.register(_POOLS)


def track_pool(pool: asyncpg.Pool) -> Callable[[], Awaitable[None]]:
    """Report `pool` in the db_pool_* gauges; returns an async function that stops it."""
    _POOLS.pools.append(pool)

    async def untrack() -> None:
        with contextlib.suppress(ValueError):
            _POOLS.pools.remove(pool)

    return untrack


class _LookupCollector(Collector):
    """UserExists' read path (store/lookup.py): the state cache and the merged
    queries, read from the live lookups at scrape time."""

    def __init__(self) -> None:
        self.lookups: list[StateLookup] = []

    def collect(self) -> Iterator[Metric]:
        live = list(self.lookups)

        def total(attr: str) -> int:
            return sum(int(getattr(lookup, attr)) for lookup in live)

        yield CounterMetricFamily(
            "auth_state_cache_hits",
            "UserExists lookups answered from the server's state cache (no query)",
            total("hits"),
        )
        yield CounterMetricFamily(
            "auth_lookup_lookups",
            "UserExists lookups that went to the database (merged into shared queries)",
            total("lookups"),
        )
        yield CounterMetricFamily(
            "auth_lookup_queries", "State queries sent for UserExists lookups", total("batches")
        )
        yield CounterMetricFamily(
            "auth_lookup_windows",
            "State queries that waited for a collection window (many calls in flight)",
            total("windows"),
        )
        yield GaugeMetricFamily(
            "auth_state_cache_entries",
            "User states in the server's cache",
            sum(len(lookup.cache) for lookup in live),
        )
        yield GaugeMetricFamily(
            "auth_state_cache_enabled",
            "1 while the cache serves (its change feed listens), 0 while it is bypassed",
            sum(int(lookup.cache.enabled) for lookup in live),
        )


_LOOKUPS = _LookupCollector()
REGISTRY.register(_LOOKUPS)


def track_lookup(lookup: StateLookup) -> Callable[[], Awaitable[None]]:
    """Report `lookup` in the auth_lookup_* / auth_state_cache_* families; returns
    an async function that stops it."""
    _LOOKUPS.lookups.append(lookup)

    async def untrack() -> None:
        with contextlib.suppress(ValueError):
            _LOOKUPS.lookups.remove(lookup)

    return untrack


class MetricsServer:
    """`GET /metrics` over HTTP/1.1 on its own port, served on the event loop (so
    collectors read asyncpg pools from the loop's thread). An async context manager;
    `aclose()` is idempotent."""

    def __init__(self, listen: str, registry: CollectorRegistry = REGISTRY) -> None:
        self.listen = listen
        self._registry = registry
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self._port = 0
        self._closed = False

    @property
    def port(self) -> int:
        return self._port

    @property
    def address(self) -> str:
        return local_address(self.listen, self._port)

    @property
    def url(self) -> str:
        return f"http://{self.address}/metrics"

    async def start(self) -> None:
        if self._server is not None or self._closed:
            raise RuntimeError("a MetricsServer starts once")
        host, port = parse_host_port(self.listen)
        self._server = await asyncio.start_server(
            self._accept, host.strip("[]"), port, limit=16 * 1024
        )
        self._port = int(self._server.sockets[0].getsockname()[1])
        log.info("metrics on %s", self.url)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(server.wait_closed(), timeout=2)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            await self._serve_one(reader, writer)
        except (ConnectionError, TimeoutError, asyncio.IncompleteReadError, ValueError):
            pass  # a client that went away or sent garbage: nothing to answer
        finally:
            self._connections.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), timeout=1)

    async def _serve_one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async with asyncio.timeout(10):
            head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split()
        headers = {
            name.strip().lower(): value.strip()
            for name, sep, value in (line.partition(":") for line in lines[1:])
            if sep
        }
        if len(parts) != 3:
            status, content_type, body = "400 Bad Request", "text/plain", b"bad request\n"
        elif parts[0] not in {"GET", "HEAD"}:
            status, content_type, body = "405 Method Not Allowed", "text/plain", b"GET only\n"
        elif parts[1].partition("?")[0] != "/metrics":
            status, content_type, body = "404 Not Found", "text/plain", b"see /metrics\n"
        else:
            encoder, content_type = choose_encoder(headers.get("accept", ""))
            try:
                body = encoder(self._registry)
                status = "200 OK"
            except Exception:
                log.exception("collecting metrics failed")
                status, content_type, body = "500 Internal Server Error", "text/plain", b"error\n"
        writer.write(
            (
                f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            ).encode("latin-1")
        )
        if parts and parts[0] != "HEAD":
            writer.write(body)
        async with asyncio.timeout(10):
            await writer.drain()


def worker_listen(listen: str, index: int) -> str:
    """The metrics address of worker `index` of `serve --workers N`: the port plus the
    index, so each worker is its own scrape target (port 0 stays 0)."""
    host, port = parse_host_port(listen)
    if port == 0:
        return listen
    return format_host_port(host.strip("[]"), port + index)


@contextlib.asynccontextmanager
async def optional_server(listen: str | None) -> AsyncIterator[MetricsServer | None]:
    """A running MetricsServer on `listen`, or None when `listen` is unset."""
    if not listen:
        yield None
        return
    async with MetricsServer(listen) as server:
        yield server


__all__ = [
    "GRPC_CODE",
    "LATENCY_BUCKETS",
    "MethodMetrics",
    "MetricsServer",
    "declare_callers",
    "method_metrics",
    "optional_server",
    "track_lookup",
    "track_pool",
    "worker_listen",
]
