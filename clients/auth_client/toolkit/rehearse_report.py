"""What `auth-toolkit rehearse` found: each step measured, a verdict per table, and
the report as text and JSON (the JSON's field names are fixed: `source_unchanged`,
`tables[]` with `table`, `orphans`, `rollback_ok`, and `steps[]` with `name`,
`lock_wait_ms_max`, `write_p99_ms`, among others).

A table is a **go** unless one of these holds (the first that does is its reason):

- a migration step failed on it (e.g. its constraint stayed locked through every
  retry), or failed as a whole;
- the rollback did not restore its constraints exactly (e.g. rows written while
  they were gone violate them: the restored constraint stays NOT VALID);
- writes to it failed (not counting what the synthetic load itself provokes:
  duplicate keys, rows whose other parent it deleted, and writes of unknown users a
  users constraint rejects) during any step after the baseline;
- writes to it took longer than `--max-write-p99-ms` (99th percentile, time spent
  in PostgreSQL) during a step that changes the schema.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

__all__ = ["RehearsalError", "Report", "Sample", "StepResult", "TableResult", "percentile"]

SCHEMA_STEPS = ("indexes", "drop", "rollback")


class RehearsalError(RuntimeError):
    """The rehearsal cannot start or go on; the message says why in one line."""


@dataclass(frozen=True, slots=True)
class Sample:
    """One operation of the load on the copy."""

    at: float  # when it was due, seconds since the load started
    latency_ms: float  # from when it was due to its end (queueing included)
    exec_ms: float  # from when it was sent to its end
    table: str
    kind: str  # insert, update, delete, read
    outcome: str  # ok, fk_rejected, conflict, error
    error: str | None = None

    @property
    def write(self) -> bool:
        return self.kind != "read"


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


@dataclass
class StepResult:
    """One playbook step on the copy, and the load while it ran."""

    name: str
    started: float  # seconds since the load started
    ended: float = 0.0
    ok: bool = True
    error: str | None = None
    detail: str = ""
    lock_wait_ms_max: float = 0.0  # the longest lock wait of any session on the copy
    tool_lock_wait_ms_max: float = 0.0  # of the migration tool's sessions
    lock_timeouts: int = 0
    retries: int = 0
    samples: list[Sample] = field(default_factory=list, repr=False)

    @property
    def duration_ms(self) -> float:
        return (self.ended - self.started) * 1000

    def _of(self, *, write: bool) -> list[Sample]:
        return [s for s in self.samples if s.write == write]

    def latency(self, q: float, *, write: bool = True) -> float | None:
        done = [s.latency_ms for s in self._of(write=write) if s.outcome != "error"]
        return percentile(done, q)

    def count(self, outcome: str, *, write: bool = True) -> int:
        return sum(1 for s in self._of(write=write) if s.outcome == outcome)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "ok": self.ok,
            "error": self.error,
            "detail": self.detail,
            "started_s": round(self.started, 3),
            "duration_ms": _ms(self.duration_ms),
            "lock_wait_ms_max": _ms(self.lock_wait_ms_max),
            "tool_lock_wait_ms_max": _ms(self.tool_lock_wait_ms_max),
            "lock_timeouts": self.lock_timeouts,
            "retries": self.retries,
            "writes": len(self._of(write=True)),
            "write_p50_ms": _ms(self.latency(50)),
            "write_p99_ms": _ms(self.latency(99)),
            "write_errors": self.count("error"),
            "write_error_first": next(
                (f"{s.table}: {s.error}" for s in self.samples if s.write and s.error), None
            ),
            "writes_rejected_by_fk": self.count("fk_rejected"),
            "write_conflicts": self.count("conflict"),
            "reads": len(self._of(write=False)),
            "read_p50_ms": _ms(self.latency(50, write=False)),
            "read_p99_ms": _ms(self.latency(99, write=False)),
            "read_errors": self.count("error", write=False),
        }


@dataclass
class TableResult:
    """One referencing table: what the rehearsal found and its verdict."""

    table: str
    constraints: list[str]
    columns: list[str]  # the user-id columns reconcile checked
    modelled: bool = True  # the load wrote to it (False: no row to model writes on)
    orphans_existing: int = 0  # rows of users auth-service reports deleted / never created
    orphans_created: int = 0  # rows the load wrote for unknown users while the FKs were gone
    orphans_checked: bool = True  # False: no column holds the user id (cannot ask)
    violating_rows: int = 0  # rows the restored constraints reject (check-restore)
    cascades: dict[str, dict[str, Any]] = field(default_factory=dict)
    rollback_ok: bool = False
    rollback_problem: str | None = None
    step_error: str | None = None
    write_errors: int = 0
    first_error: str | None = None
    write_p99_ms: dict[str, float] = field(default_factory=dict)  # per schema step
    verdict: str = "no-go"
    reason: str = ""

    @property
    def orphans(self) -> int:
        return self.orphans_existing + self.orphans_created

    def decide(self, max_write_p99_ms: float) -> None:
        """Set `verdict` and its one-line `reason`."""
        stalls = {s: v for s, v in self.write_p99_ms.items() if v > max_write_p99_ms}
        problem = (
            self.step_error
            or (None if self.rollback_ok else f"rollback: {self.rollback_problem}")
            or (
                f"{self.write_errors} write(s) failed while the playbook ran: {self.first_error}"
                if self.write_errors
                else None
            )
            or (
                "writes stalled: "
                + ", ".join(f"p99 {v:.0f} ms during {s}" for s, v in stalls.items())
                + f" (--max-write-p99-ms {max_write_p99_ms:g})"
                if stalls
                else None
            )
        )
        self.verdict = "no-go" if problem else "go"
        self.reason = problem or self._go_reason()

    def _go_reason(self) -> str:
        worst = max(self.write_p99_ms.values(), default=0.0)
        orphans = (
            f"{self.orphans} orphan row(s) ({self.orphans_created} written while the FKs were gone)"
            if self.orphans_checked
            else "orphans not checked (no column holds the user id)"
        )
        if not self.modelled:
            load = "no writes modelled (empty table)"
        elif not self.write_p99_ms:
            load = "no write to it fell in the schema steps"
        else:
            load = f"writes p99 at most {worst:.1f} ms during the schema steps"
        return f"{load}; {orphans}; the rollback restores every constraint"

    def to_json(self) -> dict[str, Any]:
        return {
            "table": self.table,
            "verdict": self.verdict,
            "reason": self.reason,
            "constraints": self.constraints,
            "columns": self.columns,
            "modelled": self.modelled,
            "orphans": self.orphans,
            "orphans_existing": self.orphans_existing,
            "orphans_created": self.orphans_created,
            "orphans_checked": self.orphans_checked,
            "rollback_ok": self.rollback_ok,
            "rollback_problem": self.rollback_problem,
            "violating_rows": self.violating_rows,
            "cascades": self.cascades,
            "write_errors": self.write_errors,
            "write_p99_ms": {k: _ms(v) for k, v in self.write_p99_ms.items()},
        }


@dataclass
class Report:
    """The whole rehearsal."""

    source_database: str
    scratch_database: str
    kept: bool
    settings: dict[str, Any]
    copy_ms: float = 0.0
    source_unchanged: bool = False
    constraints_identical: bool = False
    steps: list[StepResult] = field(default_factory=list)
    tables: list[TableResult] = field(default_factory=list)
    timeline_png: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def go(self) -> bool:
        return all(t.verdict == "go" for t in self.tables) and self.source_unchanged

    def to_json(self) -> dict[str, Any]:
        return {
            "go": self.go,
            "source_database": self.source_database,
            "scratch_database": self.scratch_database,
            "scratch_kept": self.kept,
            "source_unchanged": self.source_unchanged,
            "constraints_identical": self.constraints_identical,
            "copy_ms": _ms(self.copy_ms),
            "settings": self.settings,
            "steps": [s.to_json() for s in self.steps],
            "tables": [t.to_json() for t in self.tables],
            "timeline_png": self.timeline_png,
            "notes": self.notes,
        }

    def render_json(self) -> str:
        return json.dumps(self.to_json(), indent=2)

    def _verdict(self, nogo: int) -> str:
        if self.go:
            return f"verdict: go on all {len(self.tables)} table(s)"
        changed = "the source's constraints or indexes changed during the rehearsal"
        if not nogo:
            return f"verdict: no-go: {changed} (rehearse again)"
        return f"verdict: no-go on {nogo} of {len(self.tables)} table(s)" + (
            "" if self.source_unchanged else f"; and {changed}"
        )

    def render_text(self) -> str:
        nogo = [t for t in self.tables if t.verdict != "go"]
        lines = [
            f"rehearsal of the FK removal on {self.scratch_database}, a copy of"
            f" {self.source_database} (copied in {self.copy_ms / 1000:.1f} s"
            + (", kept)" if self.kept else ", dropped at the end)"),
            "source unchanged: "
            + (
                "yes (read only; its constraints and indexes are as they were)"
                if self.source_unchanged
                else "NO: its constraints or indexes changed during the rehearsal"
            ),
            "settings: " + "; ".join(f"{k} {v}" for k, v in self.settings.items()),
            "",
            *_table(_step_rows(self.steps)),
            "",
            *_table(_verdict_rows(self.tables)),
            "",
        ]
        lines += [f"note: {n}" for n in self.notes]
        lines.append(
            "constraints after the rollback: "
            + ("identical to before" if self.constraints_identical else "NOT identical")
        )
        if self.timeline_png:
            lines.append(f"timeline: {self.timeline_png}")
        lines.append(self._verdict(len(nogo)))
        return "\n".join(lines)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _step_rows(steps: list[StepResult]) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = [
        (
            "STEP", "OK", "TIME S", "LOCK WAIT MAX MS", "TIMEOUTS", "RETRIES", "WRITES",
            "W P50 MS", "W P99 MS", "W ERRORS", "FK REJECTED", "R P99 MS", "DETAIL",
        )
    ]  # fmt: skip
    rows += [
        (
            s.name,
            "yes" if s.ok else "NO",
            f"{s.duration_ms / 1000:.2f}",
            f"{s.lock_wait_ms_max:.0f}",
            str(s.lock_timeouts),
            str(s.retries),
            str(len(s._of(write=True))),
            _fmt(s.latency(50)),
            _fmt(s.latency(99)),
            str(s.count("error")),
            str(s.count("fk_rejected")),
            _fmt(s.latency(99, write=False)),
            s.error or s.detail,
        )
        for s in steps
    ]
    return rows


def _verdict_rows(tables: list[TableResult]) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = [
        ("TABLE", "VERDICT", "ORPHANS", "OF WHICH NEW", "ROLLBACK", "REASON")
    ]
    rows += [
        (
            t.table,
            t.verdict,
            str(t.orphans) if t.orphans_checked else "?",
            str(t.orphans_created),
            "ok" if t.rollback_ok else "FAILED",
            t.reason,
        )
        for t in tables
    ]
    return rows


def _table(rows: list[tuple[str, ...]]) -> list[str]:
    """Left-aligned columns; the last column is free text and never padded."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    return [
        ("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)) + "  " + r[-1]).rstrip()
        for r in rows
    ]
