"""The `auth-service` command. Subcommands live in `cli_server` (serve, migrate, dev,
relay, health) and `cli_tools` (users, fk-audit, reconcile)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from auth_service import cli_server, cli_tools
from auth_service.cli_common import PROG, fail, run_async
from auth_service.config import ConfigError

__all__ = ["PROG", "build_parser", "main", "run_async"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="Canonical user-validation service.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    cli_server.register(sub)
    cli_tools.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as exc:
        return fail(str(exc), code=2)
    except KeyboardInterrupt:
        return 130
