"""Pieces shared by the `auth-service` subcommands: running a coroutine, failing
with one line, and the flags several commands take (metrics address, TLS)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from auth_client import TLSConfig

PROG = "auth-service"


def run_async(coro: Coroutine[Any, Any, int]) -> int:
    """Run on uvloop when it is installed (it is a dependency on Linux/macOS)."""
    try:
        import uvloop  # noqa: PLC0415
    except ImportError:  # pragma: no cover - Windows
        return asyncio.run(coro)
    return uvloop.run(coro)


def fail(message: str, code: int = 1) -> int:
    print(f"{PROG}: {message}", file=sys.stderr)  # noqa: T201
    return code


def host_port(value: str) -> str:
    from auth_service.addresses import parse_host_port  # noqa: PLC0415

    try:
        parse_host_port(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return value.strip()


def metrics_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--metrics-listen",
        type=host_port,
        metavar="HOST:PORT",
        help="serve Prometheus metrics at http://HOST:PORT/metrics (overrides METRICS_LISTEN; off unless set)",
    )


def tls_flags(parser: argparse.ArgumentParser) -> None:
    """Flags of a command that calls auth-service: TLS and mTLS."""
    parser.add_argument("--tls", action="store_true", help="use TLS with the system CAs")
    parser.add_argument("--ca-file", metavar="PEM", help="use TLS, trusting this CA bundle")
    parser.add_argument("--server-name", help="TLS name to verify instead of the target host")
    parser.add_argument("--cert-file", metavar="PEM", help="client certificate (mTLS)")
    parser.add_argument("--key-file", metavar="PEM", help="key of --cert-file")


def wants_tls(args: argparse.Namespace) -> bool:
    return bool(args.tls or args.ca_file or args.cert_file or args.key_file)


def client_tls(args: argparse.Namespace) -> TLSConfig | None:
    """The `auth_client.TLSConfig` the TLS flags describe, or None for plaintext."""
    if not wants_tls(args):
        return None
    from auth_client import TLSConfig  # noqa: PLC0415

    return TLSConfig(
        root_certificates=args.ca_file,
        certificate_chain=args.cert_file,
        private_key=args.key_file,
        server_name=args.server_name,
    )
