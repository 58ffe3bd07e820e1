"""The server's subcommands: serve, migrate, dev, relay, health."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from auth_client.toolkit.flags import add_tls_flags, wants_tls
from auth_service.cli.common import fail, host_port, metrics_flag, run_async
from auth_service.config import ConfigError, Settings, cli_default, otel_from_env


def _serve_settings(args: argparse.Namespace) -> Settings:
    """The environment's settings with `serve`'s flags applied (a worker of
    `--workers` shares the port, and only worker 0 runs the relay)."""
    overrides: dict[str, Any] = {}
    if args.listen:
        overrides["listen"] = args.listen
    if args.allow_insecure:
        overrides["allow_insecure"] = True
    if args.metrics_listen:
        overrides["metrics_listen"] = args.metrics_listen
    if args.worker_index is not None:
        overrides["reuse_port"] = True
        if args.worker_index > 0:
            overrides["relay_enabled"] = False
    settings = Settings.from_env(**overrides).replace(allow_unauthenticated_reads=False)
    if args.worker_index and settings.metrics_listen:
        from auth_service.api.metrics_endpoint import worker_listen  # noqa: PLC0415

        settings = settings.replace(
            metrics_listen=worker_listen(settings.metrics_listen, args.worker_index)
        )
    return settings


def cmd_serve(args: argparse.Namespace) -> int:
    from auth_service.api import logs  # noqa: PLC0415
    from auth_service.api.grpc_server import ServerStartError  # noqa: PLC0415
    from auth_service.api.server import serve  # noqa: PLC0415
    from auth_service.api.tls import insecure_listen_problem  # noqa: PLC0415

    settings = _serve_settings(args)
    problem = insecure_listen_problem(settings)
    if problem:
        return fail(problem, code=2)
    logs.configure(settings.log_level, settings.log_format)
    if args.workers > 1:
        from auth_service.cli.workers import WorkersError, run_workers  # noqa: PLC0415

        passthrough = ["--allow-insecure"] if args.allow_insecure else []
        if args.metrics_listen:
            passthrough += ["--metrics-listen", args.metrics_listen]
        try:
            return run_workers(args.workers, settings.listen, passthrough)
        except WorkersError as exc:
            return fail(str(exc), code=2)
    try:
        return run_async(serve(settings))
    except ServerStartError as exc:
        return fail(str(exc))


def cmd_migrate(args: argparse.Namespace) -> int:
    from auth_service.store.migrations import MigrationError, migrate  # noqa: PLC0415

    url = args.database_url or cli_default("DATABASE_URL")
    if not url:
        raise ConfigError({"DATABASE_URL": "is required (or pass --database-url)"})
    try:
        report = migrate(url, wait_s=args.wait)
    except MigrationError as exc:
        return fail(str(exc))
    print(report or "no pending migrations")  # noqa: T201
    return 0


def cmd_erase_deleted(args: argparse.Namespace) -> int:
    from auth_service.store.erasure_command import EraseError, run  # noqa: PLC0415

    url = args.database_url or cli_default("DATABASE_URL")
    if not url:
        raise ConfigError({"DATABASE_URL": "is required (or pass --database-url)"})
    retention = Settings.from_env(database_url=url, relay_enabled=False).pii_retention_s
    try:
        return run_async(run(url, retention_s=retention, batch=args.batch_size))
    except EraseError as exc:
        return fail(str(exc))


def cmd_dev(args: argparse.Namespace) -> int:
    from auth_service.api.grpc_server import ServerStartError  # noqa: PLC0415
    from auth_service.local.dev import DevError, DevOptions, run_dev  # noqa: PLC0415
    from auth_service.local.embedded import EmbeddedError  # noqa: PLC0415
    from auth_service.store.migrations import MigrationError  # noqa: PLC0415

    options = DevOptions(
        listen=args.listen,
        admin_token=args.admin_token,
        data_dir=Path(args.data_dir).resolve() if args.data_dir else None,
        database_url=cli_default("DATABASE_URL"),
        log_level=args.log_level,
        kafka_listen=args.kafka_listen,
        kafka_bootstrap_servers=cli_default("KAFKA_BOOTSTRAP_SERVERS"),
        metrics_listen=args.metrics_listen,
        otel=otel_from_env(),
    )
    try:
        return run_async(run_dev(options))
    except (DevError, EmbeddedError, MigrationError, ServerStartError) as exc:
        return fail(str(exc))


def cmd_relay(args: argparse.Namespace) -> int:
    from auth_service.api import logs  # noqa: PLC0415
    from auth_service.cli.relay import run_relay  # noqa: PLC0415

    overrides: dict[str, Any] = {"relay_enabled": True}
    if args.metrics_listen:
        overrides["metrics_listen"] = args.metrics_listen
    settings = Settings.from_env(command="relay", **overrides)
    logs.configure(settings.log_level, settings.log_format)

    try:
        return run_async(run_relay(settings))
    except OSError as exc:  # the metrics port is taken
        return fail(f"cannot serve metrics on {settings.metrics_listen}: {exc}")


def cmd_health(args: argparse.Namespace) -> int:
    from auth_service.cli.probe import ProbeTLS, run  # noqa: PLC0415

    tls = None
    if wants_tls(args):
        tls = ProbeTLS(args.ca_file, args.cert_file, args.key_file, args.server_name)
    return run(
        target=args.target,
        grpc_listen=cli_default("GRPC_LISTEN"),
        service=args.service,
        timeout=args.timeout,
        http_url=args.http,
        tls=tls,
    )


def register(sub: Any) -> None:
    serve = sub.add_parser("serve", help="run the gRPC server (configured by environment)")
    serve.add_argument("--listen", type=host_port, help="host:port to bind (overrides GRPC_LISTEN)")
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
    metrics_flag(serve)
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

    erase = sub.add_parser(
        "erase-deleted",
        help="erase the personal data of deleted users that is due (one-off; idempotent)",
        description="Erase the personal data (username, display name, email) of every "
        "deleted user whose PII_RETENTION_S is over, e.g. users deleted before erasure "
        "existed. Batched, safe beside running servers, a no-op when nothing is due.",
    )
    erase.add_argument("--database-url", help="overrides DATABASE_URL")
    erase.add_argument(
        "--batch-size", type=int, default=500, help="rows per transaction (default %(default)s)"
    )
    erase.set_defaults(func=cmd_erase_deleted)

    dev = sub.add_parser(
        "dev",
        help="run locally: embedded PostgreSQL, migrations, demo users, server",
        description="Run everything locally: an embedded PostgreSQL and Kafka-compatible "
        "broker, migrations, demo users and the server (reads need no token). "
        "An exported DATABASE_URL or KAFKA_BOOTSTRAP_SERVERS is used instead of the "
        "embedded server (the banner says so; unset it for the embedded one); one that "
        "cannot be reached fails at once.",
    )
    dev.add_argument(
        "--listen",
        type=host_port,
        default="127.0.0.1:50051",
        help="gRPC host:port (default %(default)s)",
    )
    dev.add_argument("--admin-token", help="admin bearer token (default: random, printed)")
    dev.add_argument("--data-dir", help="keep the embedded database here (default: temporary)")
    dev.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    dev.add_argument(
        "--kafka-listen",
        type=host_port,
        default="127.0.0.1:9092",
        metavar="HOST:PORT",
        help="embedded broker address, unless KAFKA_BOOTSTRAP_SERVERS is set (default %(default)s)",
    )
    metrics_flag(dev)
    dev.set_defaults(func=cmd_dev)

    relay = sub.add_parser(
        "relay",
        help="publish outbox events to Kafka (several replicas may run; configured by environment)",
    )
    metrics_flag(relay)
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
    add_tls_flags(health)
    health.set_defaults(func=cmd_health)
