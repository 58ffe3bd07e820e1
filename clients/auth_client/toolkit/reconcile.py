"""`auth-toolkit reconcile`: find the rows of a service table whose user id is not an
active user of auth-service, and optionally fix them.

A run has two passes, so that nothing changes unless the whole run may go ahead:

1. **Scan** (every run): the distinct ids of the column in keyset-paginated batches
   (`WHERE col > last GROUP BY col ORDER BY col LIMIT n`: no long transaction, no
   OFFSET), with their live and soft-deleted row counts; each batch checked with one
   `BatchUserExists` call. A deleted user (DELETED) and an id that never existed
   (NOT_FOUND) are orphans, reported apart. Ids held only by rows already
   soft-deleted are reported apart and are no orphans; `--ignore-id` ids (a
   tombstone user) are skipped; in a text column, values that are not a hyphenated
   UUID are reported as invalid and never sent or touched. Then the cascade plan
   (`reconcile_cascade`): every row each action would change, per table.
2. **Fix** (`--action`, not `--dry-run`), only when the scan allows it: the orphan
   fraction of the live rows scanned is at most `--max-orphan-fraction` (an empty or
   wrong auth-service makes every row an orphan), no row references the orphans
   through NO ACTION / RESTRICT, and the action changes no other row unless
   `--allow-cascade`. Otherwise the run is refused and nothing changes. The orphans
   of each batch are fixed in transactions of at most `fix_rows` rows (live rows
   only), and what each transaction really changed, cascades included, is read
   from pg_stat_xact_user_tables before it commits.

The cursor is saved to the state file (if any) after each batch of the last pass
(scanned, in a dry run; fixed, otherwise): a stopped run continues where it was;
`--resume-from ID` starts after ID. `--rate` limits batches per second; progress
goes to stderr.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import asyncpg

from auth_client.toolkit import reconcile_cascade
from auth_client.toolkit.reconcile_model import Batch, IdState, ReconcileError, Report
from auth_client.toolkit.reconcile_target import (
    Options,
    Target,
    classify,
    cursor_value,
    fix_sql,
    inspect,
    scan_sql,
)

if TYPE_CHECKING:
    from auth_client.toolkit.reconcile_checker import Pacer, UserStates
    from auth_client.toolkit.reconcile_model import Progress, StateFile

__all__ = ["Options", "Reconciliation"]

# Rows each table lost or had changed so far in this transaction (partitions
# counted under their partitioned table).
_CHANGED = """
SELECT COALESCE(pg_catalog.pg_partition_root(relid), relid)::pg_catalog.regclass::text AS rel,
       sum(n_tup_del + n_tup_upd)::int8 AS n
FROM pg_catalog.pg_stat_xact_user_tables GROUP BY 1 HAVING sum(n_tup_del + n_tup_upd) > 0
"""


@dataclass(frozen=True, slots=True)
class _Scanned:
    cursor: str
    orphans: list[object]  # raw values, as stored, to fix


async def _changed(conn: asyncpg.Connection) -> dict[str, int]:
    return {row["rel"]: row["n"] for row in await conn.fetch(_CHANGED)}


class Reconciliation:
    """One run; `report` stays readable when the run is interrupted."""

    def __init__(
        self,
        conn: asyncpg.Connection,
        checker: UserStates,
        options: Options,
        *,
        pacer: Pacer,
        progress: Progress,
        state: StateFile | None = None,
    ) -> None:
        self.conn = conn
        self.checker = checker
        self.options = options
        self.pacer = pacer
        self.progress = progress
        self.state = state
        self.report = Report(options.table, options.column, options.action, not options.applies)

    async def run(self) -> Report:
        """Scan, plan, and fix if allowed. Raises ReconcileError."""
        options, report = self.options, self.report
        await self.conn.execute("SELECT pg_catalog.set_config('search_path', '', false)")
        target = await inspect(self.conn, options)
        if self.state is not None and self.state.load(report):
            self.progress.note(
                f"resuming from state file {self.state.path} after {report.cursor!r}"
            )
        if options.resume_from is not None:
            report.cursor = options.resume_from
        report.resumed_from = report.cursor
        if not target.indexed:
            self.progress.note(
                f"warning: no index starts with {target.sql_column}; every batch reads all of"
                f" {target.sql_table} (fk-audit --emit-migration --indexes-only writes one)"
            )
        start = report.cursor
        rows_before, orphan_rows_before = report.rows_scanned, report.orphan_rows
        scanned = await self._scan(target, save=not options.applies)
        values = [v for batch in scanned for v in batch.orphans]
        actions = [options.action] if options.action else list(target.actions)
        edges = await reconcile_cascade.load_edges(self.conn)
        plans = {}
        for action in actions:
            plans[action] = await reconcile_cascade.plan(self.conn, target, action, values, edges)
            report.cascades[action] = plans[action].to_json()
        if options.applies:
            assert options.action is not None
            scanned_rows = report.rows_scanned - rows_before
            orphan_rows = report.orphan_rows - orphan_rows_before
            report.refused = self._refusal(plans[options.action], scanned_rows, orphan_rows)
            if report.refused:
                report.cursor = start
            else:
                await self._fix(target, scanned)
        if report.complete and self.state is not None and not report.refused:
            self.state.remove()
        self.progress.update(report, final=True)
        return report

    def _refusal(
        self, plan: reconcile_cascade.CascadePlan, scanned_rows: int, orphan_rows: int
    ) -> str | None:
        options = self.options
        fraction = orphan_rows / scanned_rows if scanned_rows else 0.0
        if fraction > options.max_orphan_fraction:
            return (
                f"{orphan_rows} of the {scanned_rows} live rows scanned ({fraction:.1%}) hold"
                f" orphan ids, more than --max-orphan-fraction {options.max_orphan_fraction:g}:"
                " is --target the right auth-service (and its database not empty)? Nothing was"
                " changed; if the figure is right, rerun with --max-orphan-fraction"
                f" {min(1.0, round(fraction + 0.005, 2)):g}"
            )
        if plan.blocked:
            blocked = ", ".join(f"{t} ({n})" for t, n in sorted(plan.blocked.items()))
            return (
                f"--action {plan.action} would fail: rows of {blocked} reference the orphan rows"
                " through NO ACTION / RESTRICT foreign keys. Nothing was changed; deal with"
                " those rows first"
            )
        if plan.other_rows and not options.allow_cascade:
            return (
                f"--action {plan.action} on {plan.target_rows} orphan rows would also change"
                f" {plan.other_rows} other rows through foreign keys: {plan.others()}. Nothing"
                " was changed; rerun with --allow-cascade to accept that"
            )
        return None

    async def _scan(self, target: Target, *, save: bool) -> list[_Scanned]:
        options, report = self.options, self.report
        first_sql, next_sql = scan_sql(target, first=True), scan_sql(target, first=False)
        scanned: list[_Scanned] = []
        while options.max_batches is None or len(scanned) < options.max_batches:
            await self.pacer.wait()
            if report.cursor is None:
                rows = await self.conn.fetch(first_sql, options.batch_size)
            else:
                cursor = cursor_value(target, report.cursor)
                rows = await self.conn.fetch(next_sql, options.batch_size, cursor)
            if not rows:
                report.complete = True
                break
            scanned.append(await self._check(target, rows))
            if save and self.state is not None:
                self.state.save(report)
            self.progress.update(report)
            if len(rows) < options.batch_size:
                report.complete = True
                break
        if not report.complete:
            report.stopped = "max-batches"
        return scanned

    async def _check(self, target: Target, rows: list[asyncpg.Record]) -> _Scanned:
        """Ask auth-service about one batch and add it to the report."""
        values = [row[0] for row in rows]
        counts = {str(row[0]): (int(row[1]), int(row[2])) for row in rows}
        by_id, invalid = classify(target, values, self.options.ignore_ids)
        keys = list(by_id)
        answers = await self.checker.states(keys) if keys else []
        deleted: list[str] = []
        not_found: list[str] = []
        orphans: list[object] = []
        orphan_rows = soft_deleted = soft_deleted_rows = 0
        for key, answer in zip(keys, answers, strict=True):
            if answer is IdState.ACTIVE:
                continue
            live = sum(counts[str(v)][0] for v in by_id[key])
            soft_deleted_rows += sum(counts[str(v)][1] for v in by_id[key])
            if not live:
                soft_deleted += 1
                continue
            orphan_rows += live
            orphans += by_id[key]
            (deleted if answer is IdState.DELETED else not_found).extend(str(v) for v in by_id[key])
        self.report.add_batch(
            Batch(
                cursor=str(values[-1]),
                ids=len(values),
                rows=sum(counts[str(v)][0] for v in values),
                deleted=deleted,
                not_found=not_found,
                orphan_rows=orphan_rows,
                soft_deleted=soft_deleted,
                soft_deleted_rows=soft_deleted_rows,
                invalid=invalid,
            )
        )
        return _Scanned(str(values[-1]), orphans)

    async def _fix(self, target: Target, scanned: list[_Scanned]) -> None:
        options, report = self.options, self.report
        assert options.action is not None
        sql = fix_sql(target, options.action)
        for batch in scanned:
            while batch.orphans:
                try:
                    async with self.conn.transaction():
                        before = await _changed(self.conn)
                        status = await self.conn.execute(sql, batch.orphans, options.fix_rows)
                        after = await _changed(self.conn)
                except asyncpg.PostgresError as exc:
                    raise ReconcileError(
                        f"--action {options.action} on {target.shown} failed: {exc}"
                    ) from exc
                report.add_fixed({t: n - before.get(t, 0) for t, n in after.items()})
                if int(status.rsplit(" ", 1)[-1]) == 0:
                    break
            report.cursor = batch.cursor
            if self.state is not None:
                self.state.save(report)
            self.progress.update(report)
