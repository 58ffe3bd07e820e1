"""Prometheus metrics of the RPCs: per-call counters and latency. The database
pool and read-path gauges are in `store_metrics`, the HTTP endpoint that exposes
the default registry (these, the relay's outbox metrics, `auth_client` counters
when a client runs in-process) in `metrics_endpoint`.

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

import bisect
import itertools
import threading
from collections.abc import Iterable, Iterator

import grpc
from prometheus_client import REGISTRY
from prometheus_client.core import (
    CounterMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

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

    __slots__ = ("_by_caller", "grpc_type", "method", "service")

    def __init__(self, service: str, method: str, grpc_type: str = "unary") -> None:
        self.service = service
        self.method = method
        self.grpc_type = grpc_type  # "unary" or "server_stream"
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


def method_metrics(service: str, method: str, grpc_type: str = "unary") -> MethodMetrics:
    """The (process-wide) metrics of `service/method`; created on first use."""
    key = (service, method)
    found = _methods.get(key)
    if found is None:
        with _methods_lock:
            found = _methods.setdefault(key, MethodMetrics(service, method, grpc_type))
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
            rpc = [m.grpc_type, m.service, m.method]
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


__all__ = ["GRPC_CODE", "LATENCY_BUCKETS", "MethodMetrics", "declare_callers", "method_metrics"]
