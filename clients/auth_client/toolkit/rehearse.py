"""`auth-toolkit rehearse`: the FK-removal playbook, step by step, on a copy of a
live service database under a load like the service's; each step measured, and a
go / no-go per table.

1. **A copy, never the source** (`rehearse_copy`): pg_dump | pg_restore into a
   scratch database on the same server while the service keeps writing; dropped
   at the end unless `--keep`.
2. **A load like the service's** (`rehearse_load`, `rehearse_tables`): writers and
   readers on every audited table, a share of the writes for users auth-service
   never issued.
3. **The playbook** (`rehearse_steps`), each step measured (lock waits from
   `rehearse_locks`, the load's latency and failures): `baseline` (load only,
   `--duration`), `indexes` (the `--indexes-only` migrations, applied by the real
   tool), `drop` (the drop migration), `window` (load only, `--duration`: writes
   the constraints no longer check), `reconcile` (a dry run per user column),
   `check-restore`, `rollback` (the tool's rollback), `verify` (the constraints
   compared with those before the drop).
4. **A verdict per table** and the report (`rehearse_report`), with a PNG
   timeline (`timeline`).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import asyncpg

from auth_client.toolkit.audit import AuditError, Scope, audit_connection
from auth_client.toolkit.migration import EmitOptions
from auth_client.toolkit.migration_tool import MigrationToolError, find_tool
from auth_client.toolkit.pg_tools import PgToolsError, find_pg_tools
from auth_client.toolkit.reconcile_model import ReconcileError
from auth_client.toolkit.rehearse_copy import (
    ScratchCopy,
    connect,
    constraint_snapshot,
    schema_snapshot,
)
from auth_client.toolkit.rehearse_load import Load, LoadConfig
from auth_client.toolkit.rehearse_locks import LockMonitor
from auth_client.toolkit.rehearse_report import (
    SCHEMA_STEPS,
    RehearsalError,
    Report,
    Sample,
    StepResult,
    TableResult,
    percentile,
)
from auth_client.toolkit.rehearse_steps import Finding, Playbook
from auth_client.toolkit.rehearse_tables import load_tables, load_users
from auth_client.toolkit.timeline import draw

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from auth_client.toolkit.audit import AuditResult, ForeignKey
    from auth_client.toolkit.migration_tool import MigrationTool
    from auth_client.toolkit.reconcile_checker import UserStates
    from auth_client.toolkit.rehearse_copy import Snapshot
    from auth_client.toolkit.rehearse_tables import TableModel, UserPool
    from auth_client.toolkit.restore_check import RestoreCheck

__all__ = ["Rehearsal", "RehearsalOptions"]

_STEP_ERRORS = (
    MigrationToolError,
    RehearsalError,
    AuditError,
    ReconcileError,
    asyncpg.PostgresError,
    OSError,
)
_LOCKED = re.compile(r"still locked after (\d+) attempt")


@dataclass(frozen=True, slots=True)
class RehearsalOptions:
    referenced_table: str = "users"
    scope: Scope = field(default_factory=Scope)
    emit: EmitOptions = field(default_factory=EmitOptions)
    migration_tool: str | None = None
    pg_bin: str | None = None
    duration: float = 30.0
    load: LoadConfig = field(default_factory=LoadConfig)
    reconcile_rate: float = 10.0
    max_write_p99_ms: float = 1000.0
    keep: bool = False
    timeline: str | None = None  # default: rehearsal-<scratch database>.png

    def __post_init__(self) -> None:
        if self.duration <= 0:
            raise ValueError("--duration must be above 0 seconds")
        if self.reconcile_rate < 0:
            raise ValueError("--reconcile-rate must not be negative")
        if self.max_write_p99_ms <= 0:
            raise ValueError("--max-write-p99-ms must be above 0")

    def describe(self) -> dict[str, Any]:
        return {
            "format": self.emit.fmt,
            "scope": self.scope.describe(),
            "locks": self.emit.lock.describe(),
            "duration_s": self.duration,
            "load": self.load.describe(),
            "max_write_p99_ms": self.max_write_p99_ms,
        }


class _Steps:
    """Runs the steps one after another, each measured."""

    def __init__(
        self, load: Load, monitor: LockMonitor, report: Report, say: Callable[[str], None]
    ) -> None:
        self.load = load
        self.monitor = monitor
        self.report = report
        self.say = say

    async def run(self, name: str, action: Callable[[], Awaitable[str]]) -> StepResult:
        step = StepResult(name, started=self.load.now())
        self.say(f"{name} ...")
        self.monitor.begin(step)
        try:
            step.detail = await action()
        except _STEP_ERRORS as exc:
            step.ok, step.error = False, str(exc) or type(exc).__name__
        step.ended = self.load.now()
        locked = _LOCKED.search(step.error or "")
        step.lock_timeouts = int(locked.group(1)) if locked else step.retries
        self.report.steps.append(step)
        self.say(
            f"{name}: {'done' if step.ok else 'FAILED'} in {step.duration_ms / 1000:.1f} s:"
            f" {step.error or step.detail}"
        )
        return step


class Rehearsal:
    """One rehearsal of the playbook for the database of `database_url`; `states`
    asks auth-service (entered by the caller)."""

    def __init__(
        self,
        database_url: str,
        options: RehearsalOptions,
        states: UserStates,
        *,
        say: Callable[[str], None] = lambda _: None,
    ) -> None:
        self.url = database_url
        self.options = options
        self.states = states
        self.say = say
        self.findings: dict[str, Finding] = {}
        self.checks: list[RestoreCheck] = []
        self.before: Snapshot = frozenset()
        self.after: Snapshot = frozenset()
        self.result_fks: tuple[ForeignKey, ...] = ()
        self.tls = False

    async def run(self) -> Report:
        """Raises RehearsalError when it cannot start; otherwise the report."""
        try:
            pg = await asyncio.to_thread(find_pg_tools, self.options.pg_bin)
            tool = find_tool(self.options.emit.fmt, self.options.migration_tool)
        except (PgToolsError, MigrationToolError) as exc:
            raise RehearsalError(str(exc)) from exc
        source = await connect(self.url, "source, read only", read_only=True)
        try:
            before = await schema_snapshot(source)
            self.say("copying the database (pg_dump | pg_restore) ...")
            async with contextlib.AsyncExitStack() as stack:
                copy = await stack.enter_async_context(
                    ScratchCopy(self.url, pg, keep=self.options.keep)
                )
                directory = Path(tempfile.mkdtemp(prefix="auth-toolkit-rehearse-"))
                if not self.options.keep:
                    stack.callback(shutil.rmtree, directory, ignore_errors=True)
                report = Report(
                    copy.source_name, copy.name, self.options.keep, self.options.describe()
                )
                report.copy_ms = copy.copy_ms
                self.say(f"copied into {copy.name} in {copy.copy_ms / 1000:.1f} s")
                if self.options.keep:
                    report.notes.append(f"the migrations rehearsed are in {directory}")
                await self._rehearse(copy.url, report, tool, directory)
            report.source_unchanged = before == await schema_snapshot(source)
        finally:
            await source.close()
        return report

    async def _prepare(self, url: str) -> tuple[AuditResult, UserPool, list[TableModel]]:
        conn = await connect(url, "setup")
        try:
            self.tls = bool(
                await conn.fetchval(
                    "SELECT ssl FROM pg_catalog.pg_stat_ssl WHERE pid = pg_catalog.pg_backend_pid()"
                )
            )
            result = await audit_connection(conn, self.options.referenced_table, self.options.scope)
            if not result.foreign_keys:
                raise RehearsalError(
                    f"nothing to rehearse: no foreign key references {result.sql_referenced_table}"
                    f" in {self.options.scope.describe()}"
                )
            self.result_fks = result.foreign_keys
            self.before = await constraint_snapshot(conn)
            users = await load_users(conn, result, self.states)
            tables = await load_tables(conn, result, users.key)
        except (AuditError, ReconcileError) as exc:  # the audit; asking auth-service
            raise RehearsalError(str(exc)) from exc
        finally:
            await conn.close()
        return result, users, tables

    async def _rehearse(
        self, url: str, report: Report, tool: MigrationTool, directory: Path
    ) -> None:
        result, users, tables = await self._prepare(url)
        tool = replace(tool, tls=self.tls)
        playbook = Playbook(
            url, result, emit=self.options.emit, tool=tool, directory=directory, key=users.key
        )
        async with LockMonitor(url) as monitor:
            load = Load(url, tables, users, self.options.load)
            async with load:
                await self._playbook(_Steps(load, monitor, report, self.say), playbook)
        _assign(report.steps, load.samples)
        with contextlib.suppress(*_STEP_ERRORS):  # rows that violate them now the load is done
            self.checks = await playbook.check_restore()
        by_table: dict[str, list[ForeignKey]] = {}
        for fk in result.foreign_keys:
            by_table.setdefault(fk.sql_table, []).append(fk)
        for table, fks in by_table.items():
            item = await self._table(playbook, table, fks, users.unknown, report.steps)
            item.modelled = table in load.modelled
            item.decide(self.options.max_write_p99_ms)
            report.tables.append(item)
        report.constraints_identical = self.before == self.after
        self._timeline(report, load.samples)

    async def _playbook(self, steps: _Steps, playbook: Playbook) -> None:
        await steps.run("baseline", self._wait)
        await steps.run("indexes", playbook.indexes)
        await steps.run("drop", playbook.drop)
        await steps.run("window", self._wait)

        async def reconcile() -> str:
            self.findings = await playbook.reconcile(self.states, self.options.reconcile_rate)
            ids = sum(len(v) for f in self.findings.values() for v in f.orphan_ids.values())
            columns = sum(len(f.orphan_ids) for f in self.findings.values())
            return f"{ids} orphan id(s) in {columns} user column(s), dry run"

        async def check_restore() -> str:
            self.checks = await playbook.check_restore()
            rows = sum(c.violating_rows for c in self.checks)
            return f"{rows} row(s) would fail validation on rollback"

        async def verify() -> str:
            # Tables created meanwhile (the migration tool's history) are not compared.
            tables = {e[1] for e in self.before}
            self.after = frozenset(e for e in await playbook.constraints() if e[1] in tables)
            changed = {(e[1], e[2]) for e in self.before ^ self.after}
            if not changed:
                return "the constraints are identical to those before the drop"
            return f"{len(changed)} constraint(s) differ from before the drop"

        await steps.run("reconcile", reconcile)
        await steps.run("check-restore", check_restore)
        await steps.run("rollback", playbook.rollback)
        await steps.run("verify", verify)

    async def _wait(self) -> str:
        await asyncio.sleep(self.options.duration)
        return f"{self.options.duration:g} s of load"

    async def _table(
        self,
        playbook: Playbook,
        table: str,
        fks: list[ForeignKey],
        unknown: list[str],
        steps: list[StepResult],
    ) -> TableResult:
        finding = self.findings.get(table, Finding())
        item = TableResult(table, [fk.constraint for fk in fks], list(finding.orphan_ids))
        item.orphans_checked = bool(finding.orphan_ids)
        item.orphans_existing, item.orphans_created = await playbook.orphan_rows(
            table, fks, finding.orphan_ids, unknown
        )
        item.cascades = finding.cascades
        item.violating_rows = sum(c.violating_rows for c in self.checks if c.table == table)
        item.rollback_problem = self._rollback_problem(table, fks, steps)
        item.rollback_ok = item.rollback_problem is None
        item.step_error = _step_error(table, {fk.sql_table for fk in self.result_fks}, steps)
        _load_figures(item, steps)
        return item

    def _rollback_problem(
        self, table: str, fks: list[ForeignKey], steps: list[StepResult]
    ) -> str | None:
        failed = next((s.error for s in steps if s.name == "rollback" and s.error), None)
        problems = []
        for fk in fks:
            was = {e for e in self.before if e[1] == table and e[2] == fk.constraint}
            now = {e for e in self.after if e[1] == table and e[2] == fk.constraint}
            if was == now:
                continue
            if not now:
                problems.append(f"{fk.constraint} is missing" + (f" ({failed})" if failed else ""))
            elif {_valid(e) for e in was} == {_valid(e) for e in now}:
                rows = sum(
                    c.violating_rows
                    for c in self.checks
                    if c.constraint == fk.constraint and c.table == table
                )
                problems.append(
                    f"{fk.constraint} is back but NOT VALID: {rows} row(s) reference users"
                    f" missing from {fk.sql_referenced_table} (written while it was gone); fix them"
                    " (auth-toolkit reconcile --action ...) and roll back again"
                )
            else:
                problems.append(f"{fk.constraint} came back different: {min(now)[3]}")
        return "; ".join(problems) or None

    def _timeline(self, report: Report, samples: list[Sample]) -> None:
        path = Path(self.options.timeline or f"rehearsal-{report.scratch_database}.png")
        try:
            draw(path, samples, report.steps, f"FK REMOVAL REHEARSAL: {report.source_database}")
        except OSError as exc:
            report.notes.append(f"cannot write the timeline {path}: {exc}")
            return
        report.timeline_png = str(path.resolve())


def _valid(entry: tuple[str, ...]) -> tuple[str, ...]:
    """A constraint snapshot entry as it would be once validated."""
    kind, table, name, definition, _ = entry
    return kind, table, name, definition.removesuffix(" NOT VALID")


def _assign(steps: list[StepResult], samples: list[Sample]) -> None:
    """Each operation to the step during which it was due."""
    for i, step in enumerate(steps):
        end = steps[i + 1].started if i + 1 < len(steps) else float("inf")
        step.samples = [s for s in samples if step.started <= s.at < end]


def _step_error(table: str, tables: set[str], steps: list[StepResult]) -> str | None:
    """A failed `indexes` or `drop` step: on the table it names (`table (constraint)`
    in the emitted SQL's errors), or on every table when it names none."""
    for step in steps:
        if step.name in ("indexes", "drop") and step.error:
            named = {t for t in tables if f"{t} (" in step.error}
            if not named or table in named:
                return f"the {step.name} migration failed: {step.error}"
    return None


def _load_figures(item: TableResult, steps: list[StepResult]) -> None:
    for step in steps[1:]:  # after the baseline
        failed = [
            s for s in step.samples if s.table == item.table and s.write and s.outcome == "error"
        ]
        item.write_errors += len(failed)
        if failed and item.first_error is None:
            item.first_error = f"{failed[0].error} (during {step.name})"
        if step.name in SCHEMA_STEPS:
            times = [
                s.exec_ms
                for s in step.samples
                if s.table == item.table and s.write and s.outcome != "error"
            ]
            p99 = percentile(times, 99)
            if p99 is not None:
                item.write_p99_ms[step.name] = p99
