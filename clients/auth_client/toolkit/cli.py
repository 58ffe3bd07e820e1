"""`auth-toolkit`: the service teams' command for removing foreign keys to users.

    auth-toolkit fk-audit --database-url URL [--schema S ...] [--exclude-table T ...]
                          [--format json] [--emit-migration DIR [--migration-format F]]
                          [--check-restore DIR]
    auth-toolkit reconcile --database-url URL --table SCHEMA.TABLE --column COL
                           --target HOST:PORT [--action ...]

Both run against the service's own database; reconcile asks auth-service over
gRPC. This module is the only one in auth_client that reads the environment, and
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

from auth_client.toolkit import exits, reconcile_command, report
from auth_client.toolkit.actions import ACTIONS
from auth_client.toolkit.audit import AuditError, Scope
from auth_client.toolkit.flags import add_tls_flags, tls_from_args
from auth_client.toolkit.migration import EmitOptions
from auth_client.toolkit.migration_format import FORMATS
from auth_client.toolkit.migration_sql import LockPolicy
from auth_client.toolkit.reconcile_model import ReconcileError
from auth_client.toolkit.reconcile_target import Options

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
            fmt=args.migration_format,
            lock=LockPolicy(timeout=args.lock_timeout, retries=args.lock_retries),
            indexes_only=args.indexes_only,
        )
        return asyncio.run(
            report.run(
                args.database_url,
                referenced_table=args.referenced_table,
                output_format=args.format,
                emit_dir=args.emit_migration,
                scope=Scope(tuple(args.schema), tuple(args.exclude_table)),
                emit=emit,
            )
        )
    except ValueError as exc:  # LockPolicy's checks of its flags
        return _fail(args.prog, str(exc), exits.USAGE)
    except AuditError as exc:
        return _fail(args.prog, str(exc))


def cmd_reconcile(args: argparse.Namespace) -> int:
    if not args.target:
        return _fail(
            args.prog,
            "--target HOST:PORT (or AUTH_SERVICE_TARGET) names the auth-service to ask",
            exits.USAGE,
        )
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
    """Add `fk-audit` and `reconcile` to the subparsers `sub` of a command `prog`."""
    audit = sub.add_parser(
        "fk-audit",
        help="list a service database's foreign keys to users",
        description="List every foreign key referencing the users table, emit the"
        " migrations that drop them, or check that a rollback would restore them.",
        epilog=exits.FK_AUDIT_HELP,
    )
    audit.add_argument(
        "--database-url", required=True, metavar="URL", help="the service database to audit"
    )
    audit.add_argument(
        "--referenced-table",
        default="users",
        metavar="T",
        help="TABLE (schema public) or SCHEMA.TABLE (default %(default)s)",
    )
    audit.add_argument("--format", choices=["table", "json"], default="table")
    audit.add_argument(
        "--schema",
        action="append",
        default=[],
        metavar="S",
        help="only referencing tables in schema S (repeatable; default: every schema)",
    )
    audit.add_argument(
        "--exclude-table",
        action="append",
        default=[],
        metavar="T",
        help="leave out referencing table SCHEMA.TABLE (repeatable)",
    )
    audit.add_argument(
        "--emit-migration",
        metavar="DIR",
        help="write migrations into DIR: the missing indexes, then one that drops these"
        " constraints (its down restores them), and an inventory for --check-restore",
    )
    audit.add_argument(
        "--migration-format",
        choices=FORMATS,
        default="dbmate",
        help="the migration tool's file layout (default %(default)s)",
    )
    audit.add_argument(
        "--indexes-only",
        action="store_true",
        help="with --emit-migration: write only the index migrations (build them first)",
    )
    audit.add_argument(
        "--lock-timeout",
        default="5s",
        metavar="T",
        help="lock_timeout of each DROP/ADD/VALIDATE CONSTRAINT, e.g. 500ms, 5s (default %(default)s)",
    )
    audit.add_argument(
        "--lock-retries",
        type=int,
        default=5,
        metavar="N",
        help="retries after a lock timeout, with backoff from 1 s doubling to 30 s"
        " (default %(default)s; 0 = fail at once)",
    )
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
    rec.add_argument("--database-url", required=True, metavar="URL", help="the service database")
    rec.add_argument("--table", required=True, metavar="SCHEMA.TABLE")
    rec.add_argument("--column", required=True, metavar="COL", help="user id column (uuid or text)")
    rec.add_argument(
        "--target",
        default=env_default("AUTH_SERVICE_TARGET"),
        metavar="HOST:PORT",
        help="auth-service to ask (env AUTH_SERVICE_TARGET; no default)",
    )
    rec.add_argument(
        "--token",
        default=env_default("AUTH_SERVICE_TOKEN"),
        help="bearer token with read access (env AUTH_SERVICE_TOKEN)",
    )
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
