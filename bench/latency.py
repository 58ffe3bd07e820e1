"""Latency of several loads at one offered rate, compared fairly on a machine whose
hypervisor takes CPU away in bursts.

On the 2-core virtual machines this bench runs on, steal time comes in bursts of a
few seconds, and one 5-second run of Health/Check alone can have a p50 of 1.4 ms or
23 ms (RESULTS.md, History 7). Runs of several seconds each, one load after the
other, give a burst to whichever load happens to run then. So the loads here take
turns in short slices (`SLICE_S`), in an order rotated every round, and each load's
latencies are pooled over all its slices: a burst of a few seconds falls on several
loads. The hypervisor's steal time is recorded per load, so the report can show
whether one load was still hit harder than the others.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from bench import procstat
from bench.report import median, percentile

SLICE_S = 2.0

# A slice of one load: runs it for `seconds`, returns each call's latency in µs.
Slice = Callable[[float], Awaitable[list[int]]]
# A cumulative count read before and after every slice (e.g. a server counter), or
# None when it cannot be read.
Probe = Callable[[], float | None]


@dataclass
class Pooled:
    """One load's latencies over all its slices, and the steal time during them."""

    latencies_us: list[int] = field(default_factory=list)
    seconds: float = 0.0  # wall time of its slices
    steal_s: float = 0.0  # CPU seconds the hypervisor took, all cores
    counted: float | None = None  # the probe's increase over its slices (None: no probe)
    slices: list[tuple[float, float]] = field(default_factory=list)  # (steal share, p99 ms)

    def stealiest(self) -> tuple[float, float]:
        """(steal share, p99 in ms) of the slice during which the hypervisor took the
        most: one such slice can set the pooled p99 (RESULTS.md, History 9)."""
        return max(self.slices, default=(0.0, float("nan")))

    def median_p99(self) -> float:
        """The median of the slices' p99s in ms: what a typical slice had, which one
        slice with a burst of steal does not move."""
        return median([p99 for _, p99 in self.slices])

    def p(self, pct: float) -> float:
        """A percentile in milliseconds."""
        return percentile(self.latencies_us, pct) / 1000

    @property
    def steal_share(self) -> float:
        """Steal during this load's slices, as a share of all cores (0..1)."""
        return procstat.share_of_cores(self.steal_s, self.seconds)


def slices_for(total_s: float) -> int:
    """How many slices give each load about `total_s` seconds (at least one)."""
    return max(1, round(total_s / SLICE_S))


async def alternate(
    loads: Mapping[str, Slice], slices: int, probe: Probe | None = None
) -> dict[str, Pooled]:
    """Run each load `slices` times for SLICE_S seconds, taking turns; the first load
    of each round moves one place on, so no load always follows the same one. With a
    `probe`, each load also gets the probe's increase over its slices."""
    names = list(loads)
    pooled = {name: Pooled() for name in names}
    for round_ in range(slices):
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            count_before = probe() if probe else None
            steal_before, started = procstat.machine_steal(), time.monotonic()
            latencies = await loads[name](SLICE_S)
            into = pooled[name]
            seconds = time.monotonic() - started
            steal = procstat.machine_steal() - steal_before
            into.seconds += seconds
            into.steal_s += steal
            into.latencies_us += latencies
            share = procstat.share_of_cores(steal, seconds)
            into.slices.append((share, percentile(latencies, 99) / 1000))
            count_after = probe() if probe else None
            if count_before is not None and count_after is not None:
                into.counted = (into.counted or 0.0) + count_after - count_before
    return pooled
