"""CPU time and memory of processes, and of the whole machine, from /proc (Linux).

CPU time is the kernel's own accounting (utime + stime) of a process and all its
descendants: for `auth-service serve --workers N` that is the master plus workers;
for PostgreSQL the postmaster plus its backends.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")
_PROC = Path("/proc")


@dataclass(frozen=True, slots=True)
class _Stat:
    pid: int
    ppid: int
    cpu_s: float
    rss_bytes: int


def _stat(pid: int) -> _Stat | None:
    try:
        text = (_PROC / str(pid) / "stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name (field 2) may contain spaces and parentheses.
    fields = text[text.rfind(")") + 2 :].split()
    return _Stat(
        pid=pid,
        ppid=int(fields[1]),
        # utime + stime, plus cutime + cstime: children it waited for (PostgreSQL's
        # backends of closed connections count for the postmaster).
        cpu_s=sum(int(f) for f in fields[11:15]) / _TICK,
        rss_bytes=int(fields[21]) * _PAGE,
    )


def _all() -> list[_Stat]:
    out = []
    for entry in _PROC.iterdir():
        if entry.name.isdigit():
            stat = _stat(int(entry.name))
            if stat is not None:
                out.append(stat)
    return out


def tree(pid: int) -> list[_Stat]:
    """`pid` and all its live descendants."""
    stats = _all()
    children: dict[int, list[_Stat]] = {}
    root = None
    for stat in stats:
        children.setdefault(stat.ppid, []).append(stat)
        if stat.pid == pid:
            root = stat
    if root is None:
        return []
    out, todo = [], [root]
    while todo:
        stat = todo.pop()
        out.append(stat)
        todo.extend(children.get(stat.pid, ()))
    return out


def tree_cpu_seconds(pid: int) -> float:
    return sum(s.cpu_s for s in tree(pid))


def tree_rss_bytes(pid: int) -> int:
    return sum(s.rss_bytes for s in tree(pid))


def tree_size(pid: int) -> int:
    return len(tree(pid))


def machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, all cores."""
    first = (_PROC / "stat").read_text().split("\n", 1)[0].split()
    # user nice system idle iowait irq softirq steal (guest time is inside user).
    values = [int(v) for v in first[1:9]]
    idle = values[3] + values[4]
    total = sum(values)
    return (total - idle) / _TICK, total / _TICK


def machine_steal() -> float:
    """CPU seconds the hypervisor gave to other guests since boot (steal), all cores."""
    first = (_PROC / "stat").read_text().split("\n", 1)[0].split()
    return int(first[8]) / _TICK


def share_of_cores(cpu_s: float, seconds: float) -> float:
    """`cpu_s` CPU seconds spent over `seconds` of wall time, as a share of all the
    machine's cores (0..1; 0 when no time passed)."""
    cores = max(1, os.cpu_count() or 1)
    return cpu_s / (seconds * cores) if seconds > 0 else 0.0


def own_cpu_seconds() -> float:
    """CPU of this process plus every child it has waited for (h2load runs, servers,
    PostgreSQL once stopped)."""
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


def load_average() -> tuple[float, float, float]:
    return os.getloadavg()
