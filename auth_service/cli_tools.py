"""Client-side subcommands: users (admin API), fk-audit, reconcile."""

from __future__ import annotations

import argparse
from typing import Any

from auth_service.cli_common import client_tls, fail, run_async, tls_flags
from auth_service.config import cli_default


def cmd_users(args: argparse.Namespace) -> int:
    from auth_service.admin_cli import run_users  # noqa: PLC0415

    return run_async(
        run_users(
            args.action,
            target=args.target,
            token=args.token,
            tls=client_tls(args),
            timeout=args.timeout,
            username=getattr(args, "username", None),
            display_name=getattr(args, "display_name", None),
            email=getattr(args, "email", None),
            user_id=getattr(args, "user_id", None),
        )
    )


def cmd_fk_audit(args: argparse.Namespace) -> int:
    from auth_service.fk_audit import AuditError  # noqa: PLC0415
    from auth_service.fk_report import run  # noqa: PLC0415

    try:
        return run_async(
            run(
                args.database_url,
                referenced_table=args.referenced_table,
                output_format=args.format,
                emit_dir=args.emit_migration,
            )
        )
    except AuditError as exc:
        return fail(str(exc))


def cmd_reconcile(args: argparse.Namespace) -> int:
    from auth_service.reconcile import Options  # noqa: PLC0415
    from auth_service.reconcile_command import run  # noqa: PLC0415
    from auth_service.reconcile_model import ReconcileError  # noqa: PLC0415

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
        )
        return run_async(
            run(
                args.database_url,
                options,
                target=args.target,
                token=args.token,
                tls=client_tls(args),
                rate=args.rate,
                state_file=args.state_file,
                output_format=args.format,
                timeout=args.timeout,
            )
        )
    except ReconcileError as exc:
        return fail(str(exc))


def register(sub: Any) -> None:
    users = sub.add_parser("users", help="create, get or delete users on a running server")
    users.add_argument(
        "--target",
        default=cli_default("AUTH_SERVICE_TARGET", "127.0.0.1:50051"),
        help="server host:port (env AUTH_SERVICE_TARGET)",
    )
    users.add_argument(
        "--token",
        default=cli_default("AUTH_SERVICE_TOKEN"),
        help="admin bearer token (env AUTH_SERVICE_TOKEN)",
    )
    users.add_argument("--timeout", type=float, default=10.0, help="deadline in seconds")
    tls_flags(users)
    actions = users.add_subparsers(dest="action", required=True, metavar="ACTION")
    create = actions.add_parser("create", help="create a user; prints it as JSON")
    create.add_argument("username")
    create.add_argument("--display-name")
    create.add_argument("--email")
    get = actions.add_parser("get", help="print an active user as JSON")
    get.add_argument("user_id", metavar="ID")
    delete = actions.add_parser("delete", help="soft-delete a user")
    delete.add_argument("user_id", metavar="ID")
    users.set_defaults(func=cmd_users)

    audit = sub.add_parser("fk-audit", help="list a service database's foreign keys to users")
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
        "--emit-migration",
        metavar="DIR",
        help="write dbmate migrations dropping these constraints into DIR",
    )
    audit.set_defaults(func=cmd_fk_audit)

    rec = sub.add_parser("reconcile", help="find (and fix) rows whose user is not active")
    rec.add_argument("--database-url", required=True, metavar="URL", help="the service database")
    rec.add_argument("--table", required=True, metavar="SCHEMA.TABLE")
    rec.add_argument("--column", required=True, metavar="COL", help="user id column (uuid or text)")
    rec.add_argument(
        "--target",
        default=cli_default("AUTH_SERVICE_TARGET", "127.0.0.1:50051"),
        metavar="HOST:PORT",
        help="auth-service host:port (env AUTH_SERVICE_TARGET)",
    )
    rec.add_argument(
        "--token",
        default=cli_default("AUTH_SERVICE_TOKEN"),
        help="bearer token with read access (env AUTH_SERVICE_TOKEN)",
    )
    rec.add_argument(
        "--action",
        choices=["delete", "soft-delete", "set-null"],
        help="fix the orphans (default: report only)",
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
    tls_flags(rec)
    rec.set_defaults(func=cmd_reconcile)
