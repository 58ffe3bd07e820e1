"""How the serving figures were measured: the notes under that part of the table."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from bench import latency
from bench.calls import ZIPF_EXPONENT, Distinct, Stream
from bench.context import Context
from bench.measure import Measured, error_note


def notes(
    ctx: Context,
    *,
    skewed_ids: Sequence[str],
    population: int,
    skewed: Stream,
    distinct: Distinct,
    slices_at: tuple[int, int],
    saturated_calls: int,
    runs: list[Measured],
) -> list[str]:
    """`slices_at`: slices per load at the target points and elsewhere on the curve;
    `saturated_calls`: the stretch of the stream one saturated run is given."""
    o, gen = ctx.options, ctx.generator
    in_flight = o.processes * o.connections * o.streams
    counts = Counter(skewed_ids[: in_flight * 50])
    top = counts.most_common(1)[0][1] / sum(counts.values())
    slices, curve_slices = slices_at
    return [
        (
            f"Load: {gen.name}, {o.processes} processes x {o.connections} connections x "
            f"{o.streams} streams = {in_flight} calls in flight; {o.rounds} alternating "
            f"round(s) of {o.duration:g} s each for Health/Check and both UserExists loads "
            f"(medians), after a {o.warmup:g} s warm-up. {gen.caveat}".strip()
        ),
        (
            f"Skewed ids: a stream of {len(skewed_ids):,} calls drawn Zipf-like "
            f"(p ~ 1/rank^{ZIPF_EXPONENT:g}) from {population:,} active users sampled "
            f"from {o.users:,} ({len(set(skewed_ids)):,} distinct ids, the most frequent one "
            f"{top:.1%} of the calls), sent in order over all runs: each run, warm-up and "
            "latency slice gets the next stretch of it (a saturated run "
            f"{saturated_calls:,} calls, cycled if it sends more), so no run "
            "replays an earlier one's ids"
            + (
                f" ({skewed.sent:,} handed out: the stream wrapped)."
                if skewed.wrapped
                else f" ({skewed.sent:,} handed out, no wrap)."
            )
            + " Every id new: each call a different active user no earlier call asked for, "
            "sent to a second server without the index of every user (STATE_INDEX_MAX_USERS=0"
            "), so every lookup is a query; the first server would answer them from memory"
            + (
                "; the sample held too few ids for every call to be new: some runs cycled "
                "theirs, so a few of their lookups hit the cache."
                if distinct.repeated
                else "."
            )
        ),
        (
            "Load generator: its CPU (utime+stime of its processes) per Health/Check call "
            "against the server's; with grpcload, Health/Check is also driven by h2load in "
            "the same shape (alternating rounds) to show grpcload is not the slower one."
        ),
        (
            "CPU: utime+stime of the server process tree (and of the PostgreSQL postmaster "
            "tree) over the run, divided by completed calls."
        ),
        (
            f"Latency: fixed total rates, fractions of the lower of the two saturated rates "
            f"(UserExists skewed, Health/Check), the same for both methods: {gen.rate_method}. "
            f"The loads take turns in {latency.SLICE_S:g} s slices, the order rotated every "
            f"round, and each load's latencies are pooled over its slices ({slices} slices "
            f"each at 10% and 50%, {curve_slices} elsewhere): steal time "
            "on this kind of machine comes in bursts of seconds, which a longer run of one "
            "load would take alone (bench/latency.py). The steal share during each load's "
            "slices is shown beside the 10% and 50% figures."
        ),
        error_note(runs, gen.error_method),
    ]
