"""Why a target was not met, in words built from the same run's figures.

Issue 14 asks that `python -m bench` show each goal met or, where not, the measured
reason. Each function here turns figures measured in the run into that reason; the
report prints it under the table for the targets the run missed (report.reasons).
What was tried about each lives in RESULTS.md's hand-written History.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from bench import procstat
from bench.latency import Pooled
from bench.report import median

if TYPE_CHECKING:
    from bench.measure import Measured

_TRIED = "What was tried: RESULTS.md, History 7 to 10."


def saturated(
    user_exists_cpu_us: float,
    health_cpu_us: float,
    pg_cpu_us: float,
    rounds: Sequence[tuple[Measured, Measured]] = (),
) -> str:
    """UserExists saturated below 0.85 of Health/Check. `rounds`: each round's
    (UserExists, Health/Check) runs."""
    text = (
        f"the server spent {user_exists_cpu_us:.0f} µs of CPU per UserExists against "
        f"{health_cpu_us:.0f} µs per Health/Check ({user_exists_cpu_us / health_cpu_us:.2f}x), "
        f"and PostgreSQL {pg_cpu_us:.0f} µs more per UserExists on the same cores"
    )
    if rounds:
        u_cores = median([u.server_cores for u, _ in rounds])
        h_cores = median([h.server_cores for _, h in rounds])
        each = per_round(rounds)
        text += (
            f"; the server process used {u_cores:.2f} cores during the UserExists runs "
            f"against {h_cores:.2f} during Health/Check's (its event-loop thread is the limit, "
            "and a call's Python work adds to that thread alone); each round's ratio, with "
            f"the steal during its UserExists / Health/Check runs: {each}"
        )
    return f"{text}. {_TRIED}"


def per_round(rounds: Sequence[tuple[Measured, Measured]]) -> str:
    """Each round's UserExists / Health/Check ratio, with the steal during its two
    runs: `0.80 (2% / 3%), ...`."""
    return ", ".join(
        f"{u.rps / h.rps:.2f} ({u.steal_share:.0%} / {h.steal_share:.0%})" for u, h in rounds
    )


def skewed_latency(skewed: Pooled, health: Pooled, cold: Pooled) -> str:
    """Skewed UserExists p50/p99 over Health/Check's at the same rate."""
    parts = []
    calls = len(skewed.latencies_us)
    if skewed.counted is not None and calls:
        share = skewed.counted / calls
        wait = cold.p(50) - health.p(50)
        text = (
            f"{share:.1%} of the skewed calls went to the database (ids the server could "
            "not answer from memory: its state cache or index; auth_lookup_lookups_total "
            "over these slices), and "
            f"a call that waits for a query took {wait:+.2f} ms against Health/Check at "
            "the median (every-id-new p50 minus Health/Check's)"
        )
        if share > 0.01:
            text += (
                "; with more than 1% of the calls waiting for a query, the p99 contains that wait"
            )
        parts.append(text)
    parts.append(
        f"the hypervisor took {skewed.steal_share:.0%} of the cores during the skewed "
        f"slices and {health.steal_share:.0%} during Health/Check's; Health/Check's own p99 "
        "follows steal time (History 7: from 8 to 138 ms between 3% and 30% steal)"
    )
    if skewed.slices and health.slices:
        (s_steal, s_p99), (h_steal, h_p99) = skewed.stealiest(), health.stealiest()
        parts.append(
            f"the skewed slice with the most steal had {s_steal:.0%} and a p99 of "
            f"{s_p99:.2f} ms, Health/Check's {h_steal:.0%} and {h_p99:.2f} ms (one such "
            "slice can set a pooled p99: History 9); the median of the slices' p99s was "
            f"{skewed.median_p99():.2f} ms against Health/Check's {health.median_p99():.2f} ms"
        )
    return "; ".join(parts) + f". {_TRIED}"


def cold_latency(
    rate: float,
    cold: Pooled,
    health: Pooled,
    *,
    cold_cpu: tuple[float, float, float],
    health_cpu: tuple[float, float],
) -> str:
    """Every-id-new UserExists p50 over Health/Check's + 1 ms at the same rate.
    `cold_cpu` is (server µs, PostgreSQL µs, saturated req/s) per every-id-new call,
    `health_cpu` (server µs, saturated req/s) per Health/Check, both saturated."""
    server_us, pg_us, cold_rps = cold_cpu
    health_us, health_rps = health_cpu
    # CPU seconds per wall second, as a share of the cores
    busy_cold = procstat.share_of_cores(rate * (server_us + pg_us) / 1e6, 1.0)
    busy_health = procstat.share_of_cores(rate * health_us / 1e6, 1.0)
    return (
        f"every one of these calls waits for a query, and at {rate:,.0f} req/s they keep "
        f"the server and PostgreSQL busy for {busy_cold:.0%} of the cores (CPU per call "
        f"measured saturated: server {server_us:.0f} + PostgreSQL {pg_us:.0f} µs) against "
        f"Health/Check's {busy_health:.0%} (server {health_us:.0f} µs): the rate is "
        f"{rate / cold_rps:.0%} of this load's own saturated rate and {rate / health_rps:.0%} "
        f"of Health/Check's. Steal during its slices: {cold.steal_share:.0%} (Health/Check's "
        f"{health.steal_share:.0%}). {_TRIED}"
    )


def batch(server_cpu_us: float, pg_cpu_us: float) -> str:
    """BatchUserExists below 0.8 of raw asyncpg."""
    return (
        f"the server spent {server_cpu_us:,.0f} µs of CPU per batch against PostgreSQL's "
        f"{pg_cpu_us:,.0f} µs, on the same cores as the raw reference. {_TRIED}"
    )


def warm_inserts(validated_us: float, fk_us: float) -> str:
    """Validated inserts with a warm cache below 1.0 of FK-checked ones."""
    return (
        f"CPU per row: validated {validated_us:.0f} µs, FK-checked {fk_us:.0f} µs (writers, "
        "auth-service and PostgreSQL); History 8 shows this ratio crossing 1.0 between two "
        f"runs of the same code. {_TRIED}"
    )


def cold_inserts(
    *,
    busy: float,
    fk_us: float,
    validated_us: float,
    plain_us: float,
    floor_us: tuple[float, float],
    rpcs_per_row: float,
) -> str:
    """Validated inserts with a cold cache below 0.8 of FK-checked ones. `floor_us`
    is the CPU of one Health/Check at one call in flight (server, caller)."""
    budget = fk_us / 0.8
    floor = sum(floor_us) * rpcs_per_row
    per_id = validated_us - plain_us - floor
    return (
        f"the cold runs kept {busy:.0%} of the cores busy, so rows/s follow CPU per row: "
        f"FK-checked {fk_us:.0f} µs, validated {validated_us:.0f} µs "
        f"({fk_us / validated_us:.2f}). For 0.8 a validated row may cost {budget:.0f} µs, "
        f"{budget - plain_us:.0f} µs more than an unchecked insert ({plain_us:.0f} µs); it "
        f"costs {validated_us - plain_us:.0f} µs more. The gRPC floor is {floor:.0f} µs of "
        f"that per row ({floor_us[0]:.0f} µs of auth-service and {floor_us[1]:.0f} µs of "
        f"caller CPU per call at one call in flight, {1 / max(rpcs_per_row, 1e-9):.1f} ids "
        f"per RPC); the other {per_id:.0f} µs are per-id work (client bookkeeping, server "
        f"handling, the query). {_TRIED}"
    )
