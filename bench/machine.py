"""A description of the machine and software the figures were measured on, and of
how busy the machine was with other work meanwhile."""

from __future__ import annotations

import importlib.metadata
import os
import platform
from dataclasses import dataclass, field
from pathlib import Path

from bench import procstat


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024 / 1024
    except OSError:
        pass
    return 0.0


AUTOGROUP = Path("/proc/sys/kernel/sched_autogroup_enabled")


def autogroup_enabled() -> bool | None:
    """Linux's per-session CPU groups (sched_autogroup): None where unknown."""
    try:
        return AUTOGROUP.read_text().strip() == "1"
    except OSError:
        return None


AUTOGROUP_CAVEAT = (
    "Linux sched_autogroup is on: the embedded PostgreSQL runs in a session of its own, so "
    "the kernel schedules it as a group apart from the servers and load generators. On a "
    "saturated 2-core machine that starved PostgreSQL for seconds at a time (SELECT 1 up "
    "to 6 s; with 2 server processes, 14-24% of calls UNAVAILABLE from the stall "
    "detector; none with it off). Measure with it off: "
    f"`echo 0 > {AUTOGROUP}` (as root; back on at reboot)."
)


def describe(extra: dict[str, str]) -> dict[str, str]:
    cores = os.cpu_count() or 0
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cores
    info = {
        "cores": f"{usable} usable of {cores} ({_cpu_model()})",
        "memory": f"{_memory_gib():.1f} GiB",
        "os": f"{platform.system()} {platform.release()}",
        "Python": f"{platform.python_implementation()} {platform.python_version()}",
        "grpcio": _version("grpcio"),
        "protobuf": _version("protobuf"),
        "asyncpg": _version("asyncpg"),
        "uvloop": _version("uvloop"),
    }
    autogroup = autogroup_enabled()
    if autogroup is not None:
        info["sched_autogroup"] = "on" if autogroup else "off"
    info.update(extra)
    return info


@dataclass
class Busy:
    """How much CPU other processes used while the benchmark ran."""

    load_before: tuple[float, float, float] = field(default_factory=procstat.load_average)
    _machine: tuple[float, float] = field(default_factory=procstat.machine_busy)
    _own: float = field(default_factory=procstat.own_cpu_seconds)
    _steal: float = field(default_factory=procstat.machine_steal)
    load_after: tuple[float, float, float] = (0.0, 0.0, 0.0)
    others_share: float = 0.0  # of all cores, 0..1
    steal_share: float = 0.0  # of all cores, 0..1: taken by the hypervisor (inside others)
    seconds: float = 0.0

    def finish(self) -> None:
        self.load_after = procstat.load_average()
        busy, total = procstat.machine_busy()
        own = procstat.own_cpu_seconds() - self._own
        wall_all_cores = total - self._machine[1]
        others = (busy - self._machine[0]) - own
        self.others_share = max(0.0, others / wall_all_cores) if wall_all_cores > 0 else 0.0
        steal = procstat.machine_steal() - self._steal
        self.steal_share = max(0.0, steal / wall_all_cores) if wall_all_cores > 0 else 0.0
        self.seconds = wall_all_cores / max(1, os.cpu_count() or 1)

    def describe(self) -> str:
        def fmt(load: tuple[float, float, float]) -> str:
            return " ".join(f"{v:.2f}" for v in load)

        return (
            f"load average {fmt(self.load_before)} before, {fmt(self.load_after)} after; "
            f"processes other than this benchmark and what it started used "
            f"{self.others_share:.0%} of all cores during the {self.seconds:.0f} s run "
            f"(of which the hypervisor's steal time {self.steal_share:.0%})"
        )
