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

_MODULES = {"client": "bench.bench_client", "relay": "bench.bench_relay"}
_TITLES = {
    "client": "auth_client (bench/bench_client.py)",
    "relay": "user_deleted relay (bench/bench_relay.py)",
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
        f"From `{module_name}.run()`, which starts its own PostgreSQL"
        + (" and broker" if name == "relay" else "")
        + "; see its docstring for the method."
    )
    return section
