"""Subcommands that call a running server or a service database: `users` (the admin
API), and `fk-audit` / `reconcile`, aliases of `auth-toolkit fk-audit` /
`auth-toolkit reconcile` kept for the 0.2 releases (they print a notice on stderr;
service teams install auth-client[toolkit] and run `auth-toolkit`)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from auth_client.toolkit.flags import add_tls_flags, tls_from_args
from auth_service.cli.common import PROG, run_async
from auth_service.config import cli_default

TOOLKIT_ALIASES = ("fk-audit", "reconcile")
ALIAS_NOTICE = (
    "{prog} {command} is an alias of `auth-toolkit {command}` (pip install "
    "'auth-client[toolkit]'), kept for the 0.2 releases"
)


def cmd_users(args: argparse.Namespace) -> int:
    from auth_service.cli.users import run_users  # noqa: PLC0415

    return run_async(
        run_users(
            args.action,
            target=args.target,
            token=args.token,
            tls=tls_from_args(args),
            timeout=args.timeout,
            username=getattr(args, "username", None),
            display_name=getattr(args, "display_name", None),
            email=getattr(args, "email", None),
            user_id=getattr(args, "user_id", None),
        )
    )


def run_alias(argv: list[str]) -> int:
    """`auth-service fk-audit|reconcile ARGS`: hand the command line to `auth-toolkit`."""
    from auth_client.toolkit.cli import main as toolkit_main  # noqa: PLC0415 - loads asyncpg

    notice = ALIAS_NOTICE.format(prog=PROG, command=argv[0])
    print(f"{PROG}: {notice}", file=sys.stderr)  # noqa: T201
    return toolkit_main(argv, prog=PROG)


def _connection_flags(parser: argparse.ArgumentParser, *, after_action: bool = False) -> None:
    """Where and how `users` reaches the server. Accepted before and after the
    action (`users --target H:P get ID` and `users get ID --target H:P`): after it,
    a flag left out keeps what it got before (argparse.SUPPRESS)."""

    def default(value: object) -> object:
        return argparse.SUPPRESS if after_action else value

    parser.add_argument(
        "--target",
        default=default(cli_default("AUTH_SERVICE_TARGET", "127.0.0.1:50051")),
        help="server host:port (env AUTH_SERVICE_TARGET)",
    )
    parser.add_argument(
        "--token",
        default=default(cli_default("AUTH_SERVICE_TOKEN")),
        help="admin bearer token (env AUTH_SERVICE_TOKEN)",
    )
    parser.add_argument("--timeout", type=float, default=default(10.0), help="deadline in seconds")
    add_tls_flags(parser, suppress_defaults=after_action)


def register(sub: Any) -> None:
    users = sub.add_parser("users", help="create, get or delete users on a running server")
    _connection_flags(users)
    actions = users.add_subparsers(dest="action", required=True, metavar="ACTION")

    def action(name: str, help_text: str) -> argparse.ArgumentParser:
        # SUPPRESS: a flag not given after the action keeps the value (or default)
        # it got before the action.
        parser: argparse.ArgumentParser = actions.add_parser(
            name, help=help_text, argument_default=argparse.SUPPRESS
        )
        _connection_flags(parser, after_action=True)
        return parser

    create = action("create", "create a user; prints it as JSON")
    create.add_argument("username")
    create.add_argument("--display-name")
    create.add_argument("--email")
    action("get", "print an active user as JSON").add_argument("user_id", metavar="ID")
    action("delete", "soft-delete a user").add_argument("user_id", metavar="ID")
    users.set_defaults(func=cmd_users)

    for name in TOOLKIT_ALIASES:  # listed in --help; main() hands them to run_alias
        sub.add_parser(name, help=f"alias of `auth-toolkit {name}` (0.2 releases)")
