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
STATE_VERSION = 1


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
    """Counts and ids of one (possibly resumed) run."""

    table: str
    column: str
    action: str | None
    dry_run: bool
    resumed_from: str | None = None
    cursor: str | None = None
    complete: bool = False
    batches: int = 0
    ids_scanned: int = 0
    deleted: int = 0
    not_found: int = 0
    invalid: int = 0
    rows_fixed: int = 0
    deleted_ids: list[str] = field(default_factory=list)
    not_found_ids: list[str] = field(default_factory=list)
    invalid_values: list[str] = field(default_factory=list)

    @property
    def orphans(self) -> int:
        return self.deleted + self.not_found

    @property
    def truncated(self) -> bool:
        return max(self.deleted, self.not_found, self.invalid) > REPORT_ID_LIMIT

    def add_batch(
        self,
        cursor: str,
        scanned: int,
        deleted: list[str],
        not_found: list[str],
        invalid: list[str],
    ) -> None:
        self.batches += 1
        self.cursor = cursor
        self.ids_scanned += scanned
        self.deleted += len(deleted)
        self.not_found += len(not_found)
        self.invalid += len(invalid)
        _capped_add(self.deleted_ids, deleted)
        _capped_add(self.not_found_ids, not_found)
        _capped_add(self.invalid_values, invalid)

    def to_json(self) -> dict[str, Any]:
        return {
            "table": self.table,
            "column": self.column,
            "action": self.action,
            "dry_run": self.dry_run,
            "complete": self.complete,
            "resumed_from": self.resumed_from,
            "cursor": self.cursor,
            "batches": self.batches,
            "ids_scanned": self.ids_scanned,
            "orphans": {
                "total": self.orphans,
                "deleted": self.deleted,
                "not_found": self.not_found,
            },
            "orphan_ids": {"deleted": self.deleted_ids, "not_found": self.not_found_ids},
            "invalid": {"count": self.invalid, "values": self.invalid_values},
            "rows_fixed": self.rows_fixed,
            "ids_truncated": self.truncated,
        }

    def summary(self) -> str:
        return (
            f"{self.ids_scanned} ids scanned in {self.batches} batches, {self.orphans} orphans "
            f"({self.deleted} deleted users, {self.not_found} never existed), "
            f"{self.invalid} non-UUID values, {self.rows_fixed} rows fixed"
        )

    def render_text(self) -> str:
        mode = "dry run" if self.dry_run or self.action is None else f"action {self.action}"
        lines = [
            f"reconcile {self.table}.{self.column} ({mode}): "
            + ("complete" if self.complete else f"stopped after {self.cursor!r}"),
            self.summary(),
        ]
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
        for key in ("batches", "ids_scanned", "deleted", "not_found", "invalid", "rows_fixed"):
            setattr(report, key, int(data[key]))
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
            "batches": report.batches,
            "ids_scanned": report.ids_scanned,
            "deleted": report.deleted,
            "not_found": report.not_found,
            "invalid": report.invalid,
            "rows_fixed": report.rows_fixed,
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
            self.note(("done: " if final else "") + report.summary() + where)
