"""`auth-toolkit fk-audit` output: a readable table or JSON, and the command itself."""

from __future__ import annotations

import json
from pathlib import Path

from auth_client.toolkit import exits, migration, restore_check
from auth_client.toolkit.audit import AuditError, AuditResult, Scope, audit_connection, connect
from auth_client.toolkit.audit_models import model_changes_json, render_model_changes


def render_table(result: AuditResult) -> str:
    """The human-readable report."""
    fks = result.foreign_keys
    lines = [
        (
            f"{len(fks)} foreign key(s) reference {result.sql_referenced_table} "
            f"in database {result.database}; {len(result.missing_indexes)} without a covering index"
        )
    ]
    if not fks:
        return lines[0]
    header = (
        "TABLE",
        "COLUMNS",
        "CONSTRAINT",
        "ON DELETE",
        "ON UPDATE",
        "DEFERRABLE",
        "INDEX",
        "ROWS",
        "NOT NULL",
        "SOFT DELETE",
        "ACTIONS",
        "NOTES",
    )
    rows = [header]
    for fk in fks:
        notes = [f"MATCH {fk.match}"] if fk.match != "SIMPLE" else []
        notes += [] if fk.validated or not fk.enforced else ["NOT VALID"]
        notes += [] if fk.enforced else ["NOT ENFORCED"]
        notes += ["partitioned"] if fk.partitioned else []
        rows.append(
            (
                fk.sql_table,
                ", ".join(fk.columns),
                fk.constraint,
                fk.on_delete_text,
                fk.on_update,
                fk.deferrable_text,
                fk.index or "MISSING",
                "unknown" if fk.row_estimate is None else str(fk.row_estimate),
                "yes" if fk.not_null else "no",
                _soft_delete_text(fk.soft_delete, fk.soft_delete_type),
                ", ".join(fk.actions),
                "; ".join(notes),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines.append("")
    lines.extend(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )
    lines.append("")
    lines.append(
        "ROWS is PostgreSQL's estimate (pg_class.reltuples); unknown = never vacuumed or analyzed."
    )
    lines.append(
        "ACTIONS: the reconcile --action values that can apply (set-null never on NOT NULL;"
        " soft-delete only with a deleted_at timestamp)."
    )
    return "\n".join(lines)


def _soft_delete_text(column: str | None, type_name: str | None) -> str:
    if column is None:
        return "-"
    return column if type_name != "boolean" else f"{column} (legacy boolean)"


def render_json(
    result: AuditResult,
    migration_files: list[str] | None = None,
    *,
    show_model_changes: bool = False,
) -> str:
    data = result.to_json()
    if show_model_changes:
        changes, setup = model_changes_json(result)
        for fk, change in zip(data["foreign_keys"], changes, strict=True):
            fk["model_change"] = change
        data["model_setup"] = setup
    if migration_files is not None:
        data["migration_files"] = migration_files
    return json.dumps(data, indent=2)


async def report(
    database_url: str,
    *,
    referenced_table: str = "users",
    output_format: str = "table",
    emit_dir: str | None = None,
    scope: Scope | None = None,
    emit: migration.EmitOptions | None = None,
    show_model_changes: bool = False,
) -> str:
    """What `auth-toolkit fk-audit` prints (with `show_model_changes`, each foreign
    key's ORM model change, see `audit_models`). Raises AuditError."""
    conn = await connect(database_url)
    try:
        result = await audit_connection(conn, referenced_table, scope)
        written: list[str] | None = None
        if emit_dir is not None:
            try:
                paths = await migration.emit(conn, result, Path(emit_dir), options=emit)
            except OSError as exc:
                raise AuditError(f"cannot write the migration: {exc}") from exc
            written = [str(p) for p in paths]
    finally:
        await conn.close()
    if output_format == "json":
        return render_json(result, written, show_model_changes=show_model_changes)
    text = render_table(result)
    if show_model_changes and result.foreign_keys:
        text += "\n\n" + render_model_changes(result)
    if written is not None:
        text += "\n\n" + (
            "\n".join(f"wrote {p}" for p in written)
            if written
            else "nothing to migrate: no file written"
        )
    return text


async def run(
    database_url: str,
    *,
    referenced_table: str = "users",
    output_format: str = "table",
    emit_dir: str | None = None,
    scope: Scope | None = None,
    emit: migration.EmitOptions | None = None,
    show_model_changes: bool = False,
) -> int:
    """`auth-toolkit fk-audit`: print the report; 0 on success. Raises AuditError."""
    text = await report(
        database_url,
        referenced_table=referenced_table,
        output_format=output_format,
        emit_dir=emit_dir,
        scope=scope,
        emit=emit,
        show_model_changes=show_model_changes,
    )
    print(text)  # noqa: T201
    return exits.OK


async def run_check_restore(database_url: str, inventory: str, output_format: str) -> int:
    """`auth-toolkit fk-audit --check-restore DIR`: 0 when every dropped constraint
    would validate on rollback, exits.REFUSED when rows would fail it."""
    fks = restore_check.load_inventory(Path(inventory))
    conn = await connect(database_url)
    try:
        checks = await restore_check.check_restore(conn, fks)
    finally:
        await conn.close()
    print(restore_check.render(checks, output_format))  # noqa: T201
    return exits.REFUSED if any(c.violating_rows for c in checks) else exits.OK
