"""Command-line flags shared by the commands that call auth-service (`auth-toolkit
reconcile`, and auth-service's own `users` and `health`): TLS and mTLS. Light on
purpose: importing it loads neither asyncpg nor the toolkit."""

from __future__ import annotations

import argparse

from auth_client import TLSConfig

__all__ = ["add_tls_flags", "tls_from_args", "wants_tls"]


def add_tls_flags(parser: argparse.ArgumentParser, *, suppress_defaults: bool = False) -> None:
    """Flags of a command that calls auth-service: TLS and mTLS. `suppress_defaults`
    for a sub-command's copy of them: a flag it does not see keeps the value the
    parent command parsed."""
    tls_default: object = argparse.SUPPRESS if suppress_defaults else False
    none: object = argparse.SUPPRESS if suppress_defaults else None
    parser.add_argument(
        "--tls", action="store_true", default=tls_default, help="use TLS with the system CAs"
    )
    parser.add_argument(
        "--ca-file", metavar="PEM", default=none, help="use TLS, trusting this CA bundle"
    )
    parser.add_argument(
        "--server-name", default=none, help="TLS name to verify instead of the target host"
    )
    parser.add_argument(
        "--cert-file", metavar="PEM", default=none, help="client certificate (mTLS)"
    )
    parser.add_argument("--key-file", metavar="PEM", default=none, help="key of --cert-file")


def wants_tls(args: argparse.Namespace) -> bool:
    return bool(args.tls or args.ca_file or args.cert_file or args.key_file)


def tls_from_args(args: argparse.Namespace) -> TLSConfig | None:
    """The `TLSConfig` the TLS flags describe, or None for plaintext."""
    if not wants_tls(args):
        return None
    return TLSConfig(
        root_certificates=args.ca_file,
        certificate_chain=args.cert_file,
        private_key=args.key_file,
        server_name=args.server_name,
    )
