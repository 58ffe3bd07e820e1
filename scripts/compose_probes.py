"""Our image's commands and health probes, as scripts/check_compose.py reads them:
`auth-service`'s own argument parser decides what parses."""

from __future__ import annotations

import argparse
import contextlib
import io
import shlex
from typing import Any

from compose_files import as_argv

from auth_service.addresses import parse_host_port
from auth_service.cli import build_parser
from auth_service.config import Settings


def parse_cli(argv: list[str]) -> tuple[argparse.Namespace | None, str]:
    """`auth-service ARGV` parsed, or None and the parser's last error line."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            return build_parser().parse_args(argv), ""
        except SystemExit:
            lines = err.getvalue().strip().splitlines()
            return None, lines[-1] if lines else "no such command"


def healthcheck_problems(
    svc: dict[str, Any],
    stage: dict[str, Any],
    command: str,
    settings: Settings | None,
    *,
    health_target: bool,
) -> list[str]:
    """What is wrong with the health check of a service of our image running
    `auth-service COMMAND` (its own, else the image's HEALTHCHECK)."""
    check = svc.get("healthcheck")
    if check is not None and check.get("disable"):
        return ["is a service_healthy dependency but its healthcheck is disabled"] * health_target
    test = as_argv(check["test"]) if check and "test" in check else stage["healthcheck"]
    if not test or test == ["NONE"]:
        return ["is a service_healthy dependency but has no healthcheck"] * health_target
    probe = test[1:] if test[0] == "CMD" else []
    if probe[:1] != ["auth-service"]:
        return [f"healthcheck {test} is not an `auth-service health` probe"]
    args, error = parse_cli(probe[1:])
    if args is None or args.command != "health":
        return [f"healthcheck `{shlex.join(probe)}` is not a valid health probe: {error}"]
    origin = "its healthcheck" if check and "test" in check else "the image's HEALTHCHECK"
    problem = _probe_mismatch(args, command, settings)
    return [f"{origin} {problem}"] if problem else []


def _probe_mismatch(
    args: argparse.Namespace, command: str, settings: Settings | None
) -> str | None:
    """How an `auth-service health` probe misses what `auth-service COMMAND` serves."""
    if command == "serve" and args.http:
        return "probes HTTP; serve answers the gRPC health probe"
    if command == "serve" and settings is not None:
        port = parse_host_port(args.target or settings.listen)[1]
        if port != parse_host_port(settings.listen)[1]:
            return f"asks port {port}; serve listens on {settings.listen}"
    elif command != "serve" and not args.http:
        return f"asks gRPC health, but `{command}` serves no gRPC (use --http or disable it)"
    elif args.http and (
        settings is None
        or not settings.metrics_listen
        or f":{parse_host_port(settings.metrics_listen)[1]}/" not in args.http
    ):
        return f"fetches {args.http}, which is not this service's METRICS_LISTEN"
    return None
