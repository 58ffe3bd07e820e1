"""The client and relay benchmarks: bench/bench_client.py and bench/bench_relay.py,
each `async def run() -> dict[str, float]` starting its own processes. Their
figures are shown here with the targets of issue 8; a module that is missing or
fails is reported as such."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

from bench.report import Section


@dataclass(frozen=True)
class Known:
    label: str
    unit: str
    reference: str = ""
    target: str = ""
    check: Callable[[float], bool] | None = None


_KNOWN: dict[str, dict[str, Known]] = {
    "client": {
        "cache_hit_us_uuid": Known(
            "cache hit, `user_exists(uuid.UUID)`", "µs/op", "", "<= 2 µs", lambda v: v <= 2
        ),
        "cache_hit_us_str": Known(
            "cache hit, `user_exists(str)`", "µs/op", "", "<= 2 µs", lambda v: v <= 2
        ),
        "rpcs_per_1000_same_id": Known(
            "RPCs per 1,000 concurrent lookups, same id", "", "ideal: 1"
        ),
        "rpcs_per_1000_distinct_ids": Known(
            "RPCs per 1,000 concurrent lookups, distinct ids",
            "",
            "ideal: 1 (BatchUserExists takes 1,000 ids)",
        ),
        "miss_latency_ms_p50": Known("uncached lookup at no load, p50", "ms", "one RPC"),
    },
    "relay": {
        "relay_events_per_s": Known("relay throughput", "events/s", "backlog drained by one relay"),
        "relay_wall_s_incl_startup": Known("backlog drained, incl. relay start-up", "s"),
        "delete_to_consumer_p50_ms": Known(
            "DeleteUser commit -> consumer, p50", "ms", "one delete at a time (low load)"
        ),
        "delete_to_consumer_p99_ms": Known(
            "DeleteUser commit -> consumer, p99",
            "ms",
            "one delete at a time (low load)",
            "<= 50 ms",
            lambda v: v <= 50,
        ),
        "delete_to_consumer_max_ms": Known("DeleteUser commit -> consumer, max", "ms"),
    },
}


def _flood(rate: int) -> dict[str, Known]:
    what = f"UserExists of unknown ids, {rate:,}/s offered (open loop)"
    return {
        f"flood_{rate}_answered_per_s": Known(f"{what}: answered", "calls/s"),
        f"flood_{rate}_primary_queries_per_s": Known(
            f"{what}: primary queries", "queries/s", "auth_lookup_queries_total"
        ),
        f"flood_{rate}_ids_per_primary_query": Known(f"{what}: ids per primary query", ""),
        f"flood_{rate}_confirmations_per_s": Known(
            f"{what}: auth_lookup_confirmations_total", "ids/s"
        ),
        f"flood_{rate}_replica_reads_per_s": Known(
            f"{what}: replica reads", "queries/s", "0: the index's NOT_FOUND goes to the primary"
        ),
        f"flood_{rate}_p50_ms": Known(f"{what}: p50", "ms", "from each call's scheduled time"),
        f"flood_{rate}_p99_ms": Known(f"{what}: p99", "ms", "from each call's scheduled time"),
    }


def _limited(rate: int) -> dict[str, Known]:
    what = f"RATE_LIMIT_RPS=200, one caller offering {rate:,} unknown ids/s"
    return {
        f"limited_{rate}_calls_per_s": Known(f"{what}: calls answered, any code", "calls/s"),
        f"limited_{rate}_answered_per_s": Known(f"{what}: answered OK", "calls/s"),
        f"limited_{rate}_exhausted_share": Known(f"{what}: RESOURCE_EXHAUSTED share", ""),
        f"limited_{rate}_unavailable_share": Known(f"{what}: UNAVAILABLE share", ""),
        f"limited_{rate}_primary_queries_per_s": Known(f"{what}: primary queries", "queries/s"),
    }


_BATCH = "BatchUserExists of 1,000 unknown ids"
_KNOWN["replicas"] = {
    "replay_lag_p50_ms": Known(
        "standby replay lag, p50", "ms", "synchronous_commit=on, ~300 creations/s, loopback"
    ),
    "replay_lag_p99_ms": Known("standby replay lag, p99", "ms"),
    "replay_lag_max_ms": Known("standby replay lag, max", "ms"),
    "replay_lag_mean_ms": Known("standby replay lag, mean", "ms"),
    "replay_lag_writer_per_s": Known("background creations during the lag samples", "rows/s"),
    "replay_lag_async_p50_ms": Known(
        "standby replay lag with synchronous_commit=off, p50",
        "ms",
        "the embedded server's setting: WAL waits for the WAL writer (200 ms)",
    ),
    "replay_lag_async_p99_ms": Known("standby replay lag with synchronous_commit=off, p99", "ms"),
    **_flood(200),
    **_flood(1000),
    **_flood(3000),
    "batch_ids_per_s": Known(f"{_BATCH}: ids/s", "ids/s", "4 calls in flight"),
    "batch_primary_queries_per_call": Known(f"{_BATCH}: primary queries per call", ""),
    "batch_primary_queries_per_s": Known(f"{_BATCH}: primary queries", "queries/s"),
    "batch_ids_per_primary_query": Known(f"{_BATCH}: ids per primary query", ""),
    "batch_confirmations_per_s": Known(f"{_BATCH}: auth_lookup_confirmations_total", "ids/s"),
    "batch_replica_reads_per_s": Known(f"{_BATCH}: replica reads", "queries/s"),
    "batch_p50_ms": Known(f"{_BATCH}: p50", "ms"),
    "batch_p99_ms": Known(f"{_BATCH}: p99", "ms"),
    **_limited(1000),
    **_limited(3000),
    "model_primary_queries_per_s": Known(
        "model: primary queries/s at 200k validations/s", "queries/s", "K=3, M=100, 0.01% unknown"
    ),
    "model_primary_queries_per_1pct_unknown": Known(
        "model: primary queries/s per 1% unknown ids", "queries/s", "K=3, M=100"
    ),
    "python_load_generator": Known(
        "load generator: grpc.aio fallback (no C compiler)", "", "the highest rates measure it"
    ),
}


_KNOWN["client_replica"] = {
    "replica_cold_vs_fk_cold": Known(
        "validated inserts with the client replica / FK-checked, cold cache",
        "x",
        "0 RPCs",
        ">= 1.0",
        lambda v: v >= 1.0,
    ),
    "replica_cold_cpu_vs_plain_cold": Known(
        "CPU per validated row (replica) / unchecked insert, cold",
        "x",
        "",
        "<= 1.10",
        lambda v: v <= 1.10,
    ),
    "replica_array_bytes_per_user": Known(
        "replica memory (arrays)", "B/user", "", "<= 20", lambda v: v <= 20
    ),
    "replica_rss_growth_bytes_per_user": Known("replica process RSS growth", "B/user"),
    "replica_load_s": Known("replica load (ExportUserStates)", "s"),
    "create_visible_p99_ms": Known("CreateUser -> visible in the replica, p99", "ms"),
    "rpc_cold_vs_fk_cold": Known(
        "validated inserts through RPCs / FK-checked, cold cache", "x", "the path without a replica"
    ),
}

_MODULES = {
    "client": "bench.bench_client",
    "relay": "bench.bench_relay",
    "replicas": "bench.bench_replicas",
    "client_replica": "bench.bench_client_replica",
}
_TITLES = {
    "client": "auth_client (bench/bench_client.py)",
    "relay": "user_deleted relay (bench/bench_relay.py)",
    "replicas": "read replicas (bench/bench_replicas.py)",
    "client_replica": "the client's local replica (bench/bench_client_replica.py)",
}
_STARTS = {
    "client": "its own PostgreSQL",
    "relay": "its own PostgreSQL and broker",
    "replicas": "a PostgreSQL primary, a hot standby and `auth-service serve`",
    "client_replica": "PostgreSQL, a broker, `auth-service serve` and its relay",
}


def _value(value: float, unit: str) -> str:
    number = f"{value:,.0f}" if abs(value) >= 100 else f"{value:.2f}"
    return f"{number} {unit}".strip()


def section_from(name: str, figures: dict[str, float]) -> Section:
    section = Section(name, _TITLES[name], figures=dict(figures))
    known = _KNOWN[name]
    for key, value in figures.items():
        spec = known.get(key)
        if spec is None:
            section.row(key, _value(value, ""))
            continue
        met = spec.check(value) if spec.check else None
        section.row(spec.label, _value(value, spec.unit), spec.reference, None, spec.target, met)
    return section


async def run(name: str) -> Section:
    module_name = _MODULES[name]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        section = Section(name, f"{_TITLES[name]} (missing)")
        section.row("not available", "-", f"cannot import {module_name}: {exc}")
        return section
    figures = await module.run()
    section = section_from(name, figures)
    section.notes.append(
        f"From `{module_name}.run()`, which starts {_STARTS[name]}; see its docstring"
        " for the method."
    )
    return section
