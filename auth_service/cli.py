"""The `auth-service` command."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any

from auth_service.config import ConfigError, Settings, cli_default

PROG = "auth-service"


def run_async(coro: Coroutine[Any, Any, int]) -> int:
    """Run on uvloop when it is installed (it is a dependency on Linux/macOS)."""
    try:
        import uvloop  # noqa: PLC0415
    except ImportError:  # pragma: no cover - Windows
        return asyncio.run(coro)
    return uvloop.run(coro)


def _fail(message: str, code: int = 1) -> int:
    print(f"{PROG}: {message}", file=sys.stderr)  # noqa: T201
    return code


def cmd_serve(args: argparse.Namespace) -> int:
    from auth_service import logs  # noqa: PLC0415
    from auth_service.app import serve  # noqa: PLC0415
    from auth_service.tls import insecure_listen_problem  # noqa: PLC0415

    overrides: dict[str, Any] = {}
    if args.listen:
        overrides["listen"] = args.listen
    if args.allow_insecure:
        overrides["allow_insecure"] = True
    if args.metrics_listen:
        overrides["metrics_listen"] = args.metrics_listen
    if args.worker_index is not None:
        # One of several processes sharing the port; only worker 0 runs the relay.
        overrides["reuse_port"] = True
        if args.worker_index > 0:
            overrides["relay_enabled"] = False
    settings = Settings.from_env(**overrides).replace(allow_unauthenticated_reads=False)
    problem = insecure_listen_problem(settings)
    if problem:
        return _fail(problem, code=2)
    if args.worker_index and settings.metrics_listen:
        from auth_service.metrics import worker_listen  # noqa: PLC0415

        settings = settings.replace(
            metrics_listen=worker_listen(settings.metrics_listen, args.worker_index)
        )
    if args.workers > 1:
        from auth_service.workers import WorkersError, run_workers  # noqa: PLC0415

        passthrough = ["--allow-insecure"] if args.allow_insecure else []
        if args.metrics_listen:
            passthrough += ["--metrics-listen", args.metrics_listen]
        try:
            return run_workers(args.workers, settings.listen, passthrough)
        except WorkersError as exc:
            return _fail(str(exc), code=2)
    logs.configure(settings.log_level, settings.log_format)
    return run_async(serve(settings))


def cmd_migrate(args: argparse.Namespace) -> int:
    from auth_service.migrate import MigrationError, migrate  # noqa: PLC0415

    url = args.database_url or cli_default("DATABASE_URL")
    if not url:
        raise ConfigError({"DATABASE_URL": "is required (or pass --database-url)"})
    try:
        report = migrate(url, wait_s=args.wait)
    except MigrationError as exc:
        return _fail(str(exc))
    print(report or "no pending migrations")  # noqa: T201
    return 0


def cmd_dev(args: argparse.Namespace) -> int:
    from auth_service.dev import DevOptions, run_dev  # noqa: PLC0415
    from auth_service.embedded import EmbeddedError  # noqa: PLC0415
    from auth_service.migrate import MigrationError  # noqa: PLC0415

    options = DevOptions(
        listen=args.listen,
        admin_token=args.admin_token,
        data_dir=Path(args.data_dir).resolve() if args.data_dir else None,
        database_url=cli_default("DATABASE_URL"),
        log_level=args.log_level,
        kafka_listen=args.kafka_listen,
        kafka_bootstrap_servers=cli_default("KAFKA_BOOTSTRAP_SERVERS"),
        metrics_listen=args.metrics_listen,
    )
    try:
        return run_async(run_dev(options))
    except (EmbeddedError, MigrationError) as exc:
        return _fail(str(exc))


def cmd_relay(args: argparse.Namespace) -> int:
    from auth_service import logs  # noqa: PLC0415
    from auth_service.metrics import optional_server  # noqa: PLC0415
    from auth_service.relay import run_relay  # noqa: PLC0415

    overrides = {"metrics_listen": args.metrics_listen} if args.metrics_listen else {}
    settings = Settings.from_env(**overrides)
    if not settings.kafka_bootstrap_servers:
        raise ConfigError({"KAFKA_BOOTSTRAP_SERVERS": "is required by auth-service relay"})
    logs.configure(settings.log_level, settings.log_format)

    async def relay_with_metrics() -> int:
        async with optional_server(settings.metrics_listen):
            return await run_relay(settings)

    try:
        return run_async(relay_with_metrics())
    except OSError as exc:  # the metrics port is taken
        return _fail(f"cannot serve metrics on {settings.metrics_listen}: {exc}")


def cmd_health(args: argparse.Namespace) -> int:
    from auth_service.probe import ProbeTLS, run  # noqa: PLC0415

    tls = None
    if args.tls or args.ca_file or args.cert_file:
        tls = ProbeTLS(args.ca_file, args.cert_file, args.key_file, args.server_name)
    return run(
        target=args.target,
        grpc_listen=cli_default("GRPC_LISTEN"),
        service=args.service,
        timeout=args.timeout,
        http_url=args.http,
        tls=tls,
    )


def cmd_users(args: argparse.Namespace) -> int:
    from auth_service.admin_cli import run_users  # noqa: PLC0415

    return run_async(
        run_users(
            args.action,
            target=args.target,
            token=args.token,
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
        return _fail(str(exc))


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
                rate=args.rate,
                state_file=args.state_file,
                output_format=args.format,
                timeout=args.timeout,
            )
        )
    except ReconcileError as exc:
        return _fail(str(exc))


def _host_port(value: str) -> str:
    from auth_service.addresses import parse_host_port  # noqa: PLC0415

    try:
        parse_host_port(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return value.strip()


def _metrics_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--metrics-listen",
        type=_host_port,
        metavar="HOST:PORT",
        help="serve Prometheus metrics at http://HOST:PORT/metrics (overrides METRICS_LISTEN; off unless set)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="Canonical user-validation service.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", help="run the gRPC server (configured by environment)")
    serve.add_argument("--listen", help="host:port to bind (overrides GRPC_LISTEN)")
    serve.add_argument(
        "--allow-insecure",
        action="store_true",
        help="listen without TLS on a non-loopback address (sets ALLOW_INSECURE)",
    )
    serve.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="run N server processes on the same port (SO_REUSEPORT); about one per core",
    )
    serve.add_argument("--worker-index", type=int, help=argparse.SUPPRESS)
    _metrics_flag(serve)
    serve.set_defaults(func=cmd_serve)

    mig = sub.add_parser("migrate", help="apply pending database migrations and exit")
    mig.add_argument("--database-url", help="overrides DATABASE_URL")
    mig.add_argument(
        "--wait",
        type=float,
        default=0,
        metavar="SECONDS",
        help="wait up to SECONDS for the database to accept connections",
    )
    mig.set_defaults(func=cmd_migrate)

    dev = sub.add_parser(
        "dev", help="run locally: embedded PostgreSQL, migrations, demo users, server"
    )
    dev.add_argument(
        "--listen", default="127.0.0.1:50051", help="gRPC host:port (default %(default)s)"
    )
    dev.add_argument("--admin-token", help="admin bearer token (default: random, printed)")
    dev.add_argument("--data-dir", help="keep the embedded database here (default: temporary)")
    dev.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    dev.add_argument(
        "--kafka-listen",
        default="127.0.0.1:9092",
        metavar="HOST:PORT",
        help="embedded broker address, unless KAFKA_BOOTSTRAP_SERVERS is set (default %(default)s)",
    )
    _metrics_flag(dev)
    dev.set_defaults(func=cmd_dev)

    relay = sub.add_parser(
        "relay",
        help="publish outbox events to Kafka (several replicas may run; configured by environment)",
    )
    _metrics_flag(relay)
    relay.set_defaults(func=cmd_relay)

    health = sub.add_parser(
        "health",
        help="probe a server's gRPC health (exit 0 only when SERVING); for HEALTHCHECK",
    )
    health.add_argument(
        "--target",
        metavar="HOST:PORT",
        help="server to ask (default: the local server of GRPC_LISTEN, else 127.0.0.1:50051)",
    )
    health.add_argument(
        "--service", default="", help="service name to ask about (default: the whole server)"
    )
    health.add_argument("--timeout", type=float, default=3.0, help="seconds (default %(default)s)")
    health.add_argument(
        "--http",
        metavar="URL",
        help="instead: GET this http:// URL, healthy when it answers 200 (relay metrics)",
    )
    health.add_argument("--tls", action="store_true", help="use TLS with the system CAs")
    health.add_argument("--ca-file", metavar="PEM", help="use TLS, trusting this CA bundle")
    health.add_argument("--server-name", help="TLS name to verify instead of the target host")
    health.add_argument("--cert-file", metavar="PEM", help="client certificate (mTLS)")
    health.add_argument("--key-file", metavar="PEM", help="key of --cert-file")
    health.set_defaults(func=cmd_health)

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
    rec.set_defaults(func=cmd_reconcile)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as exc:
        return _fail(str(exc), code=2)
    except KeyboardInterrupt:
        return 130
