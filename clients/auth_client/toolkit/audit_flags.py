"""The flags `fk-audit` and `rehearse` share, defined once: the database, the audit's
scope (`--referenced-table`, `--schema`, `--exclude-table`) and how migrations are
written (`--migration-format`, `--lock-timeout`, `--lock-retries`)."""

from __future__ import annotations

import argparse

from auth_client.toolkit.audit import Scope
from auth_client.toolkit.migration_format import FORMATS
from auth_client.toolkit.migration_sql import LockPolicy
from auth_client.toolkit.urls import database_url

__all__ = ["add_database_flag", "add_migration_flags", "add_scope_flags", "lock_policy", "scope"]


def add_database_flag(parser: argparse.ArgumentParser, help_text: str) -> None:
    """`--database-url`, checked before anything connects (see `urls`)."""
    parser.add_argument(
        "--database-url", required=True, metavar="URL", type=database_url, help=help_text
    )


def add_scope_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--referenced-table",
        default="users",
        metavar="T",
        help="TABLE (schema public) or SCHEMA.TABLE (default %(default)s)",
    )
    parser.add_argument(
        "--schema",
        action="append",
        default=[],
        metavar="S",
        help="only referencing tables in schema S (repeatable; default: every schema)",
    )
    parser.add_argument(
        "--exclude-table",
        action="append",
        default=[],
        metavar="T",
        help="leave out referencing table SCHEMA.TABLE (repeatable)",
    )


def add_migration_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--migration-format",
        choices=FORMATS,
        default="dbmate",
        help="the migration tool's file layout (default %(default)s)",
    )
    parser.add_argument(
        "--lock-timeout",
        default="5s",
        metavar="T",
        help="lock_timeout of each DROP/ADD/VALIDATE CONSTRAINT, e.g. 500ms, 5s (default %(default)s)",
    )
    parser.add_argument(
        "--lock-retries",
        type=int,
        default=5,
        metavar="N",
        help="retries after a lock timeout, with backoff from 1 s doubling to 30 s"
        " (default %(default)s; 0 = fail at once)",
    )


def scope(args: argparse.Namespace) -> Scope:
    return Scope(tuple(args.schema), tuple(args.exclude_table))


def lock_policy(args: argparse.Namespace) -> LockPolicy:
    """ValueError names the flag that is wrong."""
    return LockPolicy(timeout=args.lock_timeout, retries=args.lock_retries)
