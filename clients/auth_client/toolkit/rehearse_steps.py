"""The playbook's steps as `auth-toolkit rehearse` runs them on the copy, each as a
user would: the migrations emitted by `fk-audit --emit-migration` (indexes first,
`--indexes-only`, then the drop) applied and rolled back by the real migration
tool, `reconcile` as a dry run, `fk-audit --check-restore`, and what the copy
holds afterwards (orphan rows, constraints).
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from auth_client.toolkit import migration
from auth_client.toolkit.actions import live_condition
from auth_client.toolkit.audit import audit_connection
from auth_client.toolkit.reconcile import Reconciliation
from auth_client.toolkit.reconcile_checker import Pacer
from auth_client.toolkit.reconcile_model import Progress, ReconcileError
from auth_client.toolkit.reconcile_target import Options
from auth_client.toolkit.rehearse_copy import connect, constraint_snapshot
from auth_client.toolkit.restore_check import RestoreCheck, check_restore, load_inventory

if TYPE_CHECKING:
    from pathlib import Path

    from auth_client.toolkit.audit import AuditResult, ForeignKey, Scope
    from auth_client.toolkit.migration_tool import MigrationTool
    from auth_client.toolkit.reconcile_checker import UserStates
    from auth_client.toolkit.rehearse_copy import Snapshot

__all__ = ["Finding", "Playbook", "user_column"]


def user_column(fk: ForeignKey, key: str) -> str | None:
    """The column of `fk` holding the user id (the one referencing `key`)."""
    for column, referenced in zip(fk.columns, fk.referenced_columns, strict=True):
        if referenced == key:
            return column
    return None


@dataclass
class Finding:
    """What reconcile found in one table (every user column of it)."""

    orphan_ids: dict[str, list[str]] = field(default_factory=dict)  # column -> ids
    cascades: dict[str, dict[str, Any]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


class Playbook:
    """The steps on the copy at `url`, for the audit `result`, in format `emit.fmt`."""

    def __init__(
        self,
        url: str,
        result: AuditResult,
        *,
        emit: migration.EmitOptions,
        tool: MigrationTool,
        directory: Path,
        key: str,
    ) -> None:
        self.url = url
        self.result = result
        self.emit = emit
        self.tool = tool
        self.directory = directory
        self.key = key
        self.drop_failed = False

    async def _emit(self, *, indexes_only: bool) -> list[Path]:
        conn = await connect(self.url, "playbook")
        try:
            scope: Scope = self.result.scope
            # Audited again, as a user would: the indexes built by then cover the keys.
            result = await audit_connection(conn, self.result.sql_referenced_table, scope)
            options = replace(self.emit, indexes_only=indexes_only)
            paths = await migration.emit(conn, result, self.directory, options=options)
        finally:
            await conn.close()
        return [p for p in paths if p.suffix == ".sql"]

    async def indexes(self) -> str:
        files = await self._emit(indexes_only=True)
        if not files:
            return "no index missing"
        await self.tool.apply(self.url, self.directory)
        built = [p for p in files if not p.name.endswith(".down.sql")]
        return f"{len(built)} index migration(s) applied"

    async def drop(self) -> str:
        self.drop_failed = True
        await self._emit(indexes_only=False)
        await self.tool.apply(self.url, self.directory)
        self.drop_failed = False
        return f"{len(self.result.foreign_keys)} constraint(s) dropped"

    async def check_restore(self) -> list[RestoreCheck]:
        fks = load_inventory(self.directory)
        conn = await connect(self.url, "check-restore")
        try:
            return await check_restore(conn, fks)
        finally:
            await conn.close()

    async def rollback(self) -> str:
        if self.drop_failed:
            return "skipped: the drop migration failed, so the tool recorded nothing to roll back"
        await self.tool.rollback(self.url, self.directory)
        return "the drop migration rolled back"

    async def reconcile(self, states: UserStates, rate: float) -> dict[str, Finding]:
        """`reconcile` (a dry run) on every user column of every audited table."""
        findings: dict[str, Finding] = {}
        for fk in self.result.foreign_keys:
            finding = findings.setdefault(fk.sql_table, Finding())
            column = user_column(fk, self.key)
            if column is None or column in finding.orphan_ids:
                continue
            conn = await connect(self.url, "reconcile")
            try:
                options = Options(table=fk.sql_table, column=column)
                run = Reconciliation(
                    conn, states, options, pacer=Pacer(rate), progress=Progress(io.StringIO())
                )
                report = await run.run()
            except ReconcileError as exc:
                finding.errors.append(f"{column}: {exc}")
                continue
            finally:
                await conn.close()
            finding.orphan_ids[column] = report.deleted_ids + report.not_found_ids
            for action, plan in report.cascades.items():
                finding.cascades[f"{column}:{action}"] = plan
        return findings

    async def constraints(self) -> Snapshot:
        conn = await connect(self.url, "verify")
        try:
            return await constraint_snapshot(conn)
        finally:
            await conn.close()

    async def orphan_rows(
        self, table: str, fks: list[ForeignKey], existing: dict[str, list[str]], unknown: list[str]
    ) -> tuple[int, int]:
        """(rows holding an orphan id found by reconcile, rows holding an id the load
        made up), live rows only; a row with both counts as made up."""
        columns = [c for c in existing if c]
        if not columns:
            return 0, 0
        fk = fks[0]
        live = live_condition(fk.soft_delete, fk.soft_delete_type)
        made_up = " OR ".join(f"{_ident(c)}::text = ANY($1::text[])" for c in columns)
        found = " OR ".join(
            f"{_ident(c)}::text = ANY(${i}::text[])" for i, c in enumerate(columns, 2)
        )
        sql = (
            f"SELECT count(*) FILTER (WHERE ({found}) IS TRUE AND ({made_up}) IS NOT TRUE),"  # noqa: S608
            f" count(*) FILTER (WHERE ({made_up}) IS TRUE) FROM {table}"
            + (f" WHERE {live}" if live else "")
        )
        conn = await connect(self.url, "orphans")
        try:
            row = await conn.fetchrow(sql, unknown, *(existing[c] for c in columns))
        finally:
            await conn.close()
        assert row is not None
        return int(row[0]), int(row[1])


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'
