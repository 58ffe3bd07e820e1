"""cli: the `auth-service` command. Subcommands live in `server` (serve, migrate,
dev, relay, health) and `tools` (users, and the fk-audit / reconcile aliases of
`auth-toolkit`); `users` and `probe` hold the client side of `users` and `health`,
`workers` the supervisor of `serve --workers N`.

May import every other wing; nothing imports `cli`. Heavy modules are imported
inside the command that needs them, so `auth-service health` (the image's
HEALTHCHECK) starts fast.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from auth_service.cli import server, tools
from auth_service.cli.common import PROG, fail, run_async
from auth_service.config import ConfigError

__all__ = ["PROG", "build_parser", "main", "run_async"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="Canonical user-validation service.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    server.register(sub)
    tools.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in tools.TOOLKIT_ALIASES:
        return tools.run_alias(argv)
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as exc:
        return fail(str(exc), code=2)
    except KeyboardInterrupt:
        return 130
