"""What `auth-toolkit reconcile` finds and remembers: the report, the state file
that makes a run resumable, and the progress lines on stderr."""

from __future__ import annotations

import contextlib
import enum
import json
import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

# Ids listed per category in a report; the counts are always exact.
REPORT_ID_LIMIT = 10_000
STATE_VERSION = 2


class ReconcileError(RuntimeError):
    """Reconciliation cannot start or go on; the message says why in one line."""


class IdState(enum.Enum):
    """What auth-service says about one id (BatchUserExists)."""

    ACTIVE = "active"
    DELETED = "deleted"  # existed, soft-deleted: an orphan
    NOT_FOUND = "not_found"  # never existed: an orphan


def _capped_add(values: list[str], new: list[str]) -> None:
    room = REPORT_ID_LIMIT - len(values)
    if room > 0:
        values.extend(new[:room])


@dataclass
class Report:
    """Counts and ids of one (possibly resumed) run. Orphans are ids auth-service
    reports deleted or never created that live rows hold; ids held only by rows
    already soft-deleted are counted apart (`soft_deleted`), never as orphans."""

    table: str
    column: str
    action: str | None
    dry_run: bool
    resumed_from: str | None = None
    cursor: str | None = None
    complete: bool = False
    batches: int = 0
    ids_scanned: int = 0
    rows_scanned: int = 0
    deleted: int = 0
    not_found: int = 0
    orphan_rows: int = 0
    soft_deleted: int = 0
    soft_deleted_rows: int = 0
    invalid: int = 0
    rows_fixed: int = 0
    deleted_ids: list[str] = field(default_factory=list)
    not_found_ids: list[str] = field(default_factory=list)
    invalid_values: list[str] = field(default_factory=list)
    rows_fixed_by_table: dict[str, int] = field(default_factory=dict)
    cascades: dict[str, dict[str, Any]] = field(default_factory=dict)
    stopped: str | None = None  # why a run ended before completing
    refused: str | None = None  # why an action changed nothing

    @property
    def orphans(self) -> int:
        return self.deleted + self.not_found

    @property
    def orphan_fraction(self) -> float:
        return self.orphan_rows / self.rows_scanned if self.rows_scanned else 0.0

    @property
    def status(self) -> str:
        if self.refused:
            return "refused"
        return "done" if self.complete else "stopped"

    @property
    def truncated(self) -> bool:
        return max(self.deleted, self.not_found, self.invalid) > REPORT_ID_LIMIT

    def add_batch(self, batch: Batch) -> None:
        self.batches += 1
        self.cursor = batch.cursor
        self.ids_scanned += batch.ids
        self.rows_scanned += batch.rows
        self.deleted += len(batch.deleted)
        self.not_found += len(batch.not_found)
        self.orphan_rows += batch.orphan_rows
        self.soft_deleted += batch.soft_deleted
        self.soft_deleted_rows += batch.soft_deleted_rows
        self.invalid += len(batch.invalid)
        _capped_add(self.deleted_ids, batch.deleted)
        _capped_add(self.not_found_ids, batch.not_found)
        _capped_add(self.invalid_values, batch.invalid)

    def add_fixed(self, by_table: dict[str, int]) -> None:
        for table, count in by_table.items():
            self.rows_fixed_by_table[table] = self.rows_fixed_by_table.get(table, 0) + count
            self.rows_fixed += count

    def to_json(self) -> dict[str, Any]:
        return {
            "table": self.table,
            "column": self.column,
            "action": self.action,
            "dry_run": self.dry_run,
            "status": self.status,
            "complete": self.complete,
            "stopped": self.stopped,
            "refused": self.refused,
            "resumed_from": self.resumed_from,
            "cursor": self.cursor,
            "batches": self.batches,
            "ids_scanned": self.ids_scanned,
            "rows_scanned": self.rows_scanned,
            "orphans": {
                "total": self.orphans,
                "deleted": self.deleted,
                "not_found": self.not_found,
                "rows": self.orphan_rows,
            },
            "orphan_fraction": round(self.orphan_fraction, 6),
            "soft_deleted": {"ids": self.soft_deleted, "rows": self.soft_deleted_rows},
            "orphan_ids": {"deleted": self.deleted_ids, "not_found": self.not_found_ids},
            "invalid": {"count": self.invalid, "values": self.invalid_values},
            "cascades": self.cascades,
            "rows_fixed": self.rows_fixed,
            "rows_fixed_by_table": dict(sorted(self.rows_fixed_by_table.items())),
            "ids_truncated": self.truncated,
        }

    def summary(self) -> str:
        return (
            f"{self.ids_scanned} ids ({self.rows_scanned} live rows) scanned in {self.batches}"
            f" batches, {self.orphans} orphans ({self.deleted} deleted users, {self.not_found}"
            f" never existed; {self.orphan_rows} rows, {self.orphan_fraction:.1%}),"
            f" {self.soft_deleted_rows} orphan rows already soft-deleted,"
            f" {self.invalid} non-UUID values, {self.rows_fixed} rows fixed"
        )

    def render_text(self) -> str:
        mode = "dry run" if self.dry_run else f"action {self.action}"
        ending = {
            "done": "done",
            "stopped": f"stopped ({self.stopped}) after {self.cursor!r}",
            "refused": f"refused: {self.refused}",
        }[self.status]
        lines = [f"reconcile {self.table}.{self.column} ({mode}): {ending}", self.summary()]
        for action, plan in self.cascades.items():
            tables = ", ".join(
                f"{t} ({', '.join(f'{n} {k}' for k, n in c.items())})"
                for t, c in plan["tables"].items()
            )
            lines.append(f"--action {action} would change: {tables or 'nothing'}")
            if plan["blocked"]:
                blocked = ", ".join(f"{t} ({n})" for t, n in plan["blocked"].items())
                lines.append(
                    f"  and fail on rows that reference them (NO ACTION/RESTRICT): {blocked}"
                )
        if self.rows_fixed_by_table:
            fixed = ", ".join(f"{t} ({n})" for t, n in sorted(self.rows_fixed_by_table.items()))
            lines.append(f"rows fixed per table: {fixed}")
        for title, ids in (
            ("deleted users", self.deleted_ids),
            ("never existed", self.not_found_ids),
            ("not a UUID", self.invalid_values),
        ):
            if ids:
                lines.append(f"{title}:")
                lines.extend(f"  {value}" for value in ids)
        if self.truncated:
            lines.append(f"(lists cut at {REPORT_ID_LIMIT} per category; counts are exact)")
        return "\n".join(lines)


@dataclass(frozen=True, slots=True)
class Batch:
    """What one scanned batch held."""

    cursor: str
    ids: int
    rows: int
    deleted: list[str]
    not_found: list[str]
    orphan_rows: int
    soft_deleted: int
    soft_deleted_rows: int
    invalid: list[str]


_COUNTERS = (
    "batches",
    "ids_scanned",
    "rows_scanned",
    "deleted",
    "not_found",
    "orphan_rows",
    "soft_deleted",
    "soft_deleted_rows",
    "invalid",
    "rows_fixed",
)


class StateFile:
    """The cursor and counts of an unfinished run, rewritten atomically after every
    batch; removed when the run completes, so the next (scheduled) run starts over."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self, report: Report) -> bool:
        """Fill `report` from the file; False when there is no file."""
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return False
        except (OSError, ValueError) as exc:
            raise ReconcileError(f"cannot read state file {self.path}: {exc}") from exc
        if not isinstance(data, dict) or data.get("version") != STATE_VERSION:
            raise ReconcileError(f"state file {self.path} is not a reconcile state file")
        mine = (report.table, report.column, report.action)
        theirs = (data.get("table"), data.get("column"), data.get("action"))
        if mine != theirs:
            raise ReconcileError(
                f"state file {self.path} belongs to another run "
                f"(table {theirs[0]}, column {theirs[1]}, action {theirs[2]})"
            )
        report.cursor = data["cursor"]
        for key in _COUNTERS:
            setattr(report, key, int(data[key]))
        report.rows_fixed_by_table = dict(data["rows_fixed_by_table"])
        report.deleted_ids = list(data["deleted_ids"])
        report.not_found_ids = list(data["not_found_ids"])
        report.invalid_values = list(data["invalid_values"])
        return True

    def save(self, report: Report) -> None:
        data = {
            "version": STATE_VERSION,
            "table": report.table,
            "column": report.column,
            "action": report.action,
            "cursor": report.cursor,
            **{key: getattr(report, key) for key in _COUNTERS},
            "rows_fixed_by_table": report.rows_fixed_by_table,
            "deleted_ids": report.deleted_ids,
            "not_found_ids": report.not_found_ids,
            "invalid_values": report.invalid_values,
        }
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            tmp.write_text(json.dumps(data), encoding="utf-8")
            tmp.replace(self.path)
        except OSError as exc:
            raise ReconcileError(f"cannot write state file {self.path}: {exc}") from exc

    def remove(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


class Progress:
    """One line on stderr at most every `interval` seconds, and a last one at the end."""

    def __init__(
        self,
        stream: TextIO | None = None,
        interval: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._stream = stream if stream is not None else sys.stderr
        self._interval = interval
        self._clock = clock
        self._last: float | None = None

    def note(self, message: str) -> None:
        print(f"reconcile: {message}", file=self._stream, flush=True)

    def update(self, report: Report, *, final: bool = False) -> None:
        now = self._clock()
        if final or self._last is None or now - self._last >= self._interval:
            self._last = now
            where = f" (at {report.cursor})" if report.cursor is not None and not final else ""
            ending = f"{report.status}: " if final else ""
            if final and report.status == "stopped":
                ending = f"stopped ({report.stopped}) before the end: "
            self.note(ending + report.summary() + where)
