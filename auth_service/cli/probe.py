"""`auth-service health`: a health probe for container HEALTHCHECKs and orchestrators.

    auth-service health [--target HOST:PORT] [--service NAME] [--timeout S]
    auth-service health --http URL

The first form asks the standard `grpc.health.v1.Health/Check` of a server and
exits 0 only when the answer is SERVING (the server reports NOT_SERVING while its
database is unreachable and while it drains on SIGTERM). The target defaults to the
local server of GRPC_LISTEN (a wildcard host becomes 127.0.0.1). With TLS on the
server, pass `--ca-file` (and `--server-name` when the certificate does not name
the target; `--cert-file`/`--key-file` for mTLS).

The second form exits 0 when an HTTP GET of URL answers 200: the liveness check of
`auth-service relay`, whose only port is its metrics endpoint.

Exit status: 0 healthy, 1 anything else (Docker reserves 2). One line on stdout says
what was seen.
"""

from __future__ import annotations

import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from auth_service.addresses import local_address

DEFAULT_TARGET = "127.0.0.1:50051"


@dataclass(frozen=True)
class ProbeTLS:
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    server_name: str | None = None

    def credentials(self) -> grpc.ChannelCredentials:
        def read(path: str | None) -> bytes | None:
            return Path(path).read_bytes() if path else None

        return grpc.ssl_channel_credentials(
            root_certificates=read(self.ca_file),
            private_key=read(self.key_file),
            certificate_chain=read(self.cert_file),
        )


def local_target(grpc_listen: str | None) -> str:
    """Where the server of GRPC_LISTEN is reached from the same host."""
    if not grpc_listen:
        return DEFAULT_TARGET
    return local_address(grpc_listen)


def check_grpc(
    target: str, *, service: str = "", timeout: float = 3.0, tls: ProbeTLS | None = None
) -> tuple[bool, str]:
    """(healthy, what was seen) for the Health service at `target`."""
    options: list[tuple[str, str | int]] = []
    if tls is None:
        channel = grpc.insecure_channel(target, options=options)
    else:
        if tls.server_name:
            options.append(("grpc.ssl_target_name_override", tls.server_name))
        channel = grpc.secure_channel(target, tls.credentials(), options=options)
    with channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        except grpc.RpcError as exc:
            code = exc.code() if isinstance(exc, grpc.Call) else None
            name = code.name if code is not None else "ERROR"
            details = exc.details() if isinstance(exc, grpc.Call) else str(exc)
            return False, f"{name}: {details}" if details else name
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    return reply.status == health_pb2.HealthCheckResponse.SERVING, status


def check_http(url: str, *, timeout: float = 3.0) -> tuple[bool, str]:
    """(healthy, what was seen) for an HTTP GET of `url` (http:// only)."""
    if urllib.parse.urlsplit(url).scheme != "http":
        return False, "only http:// URLs are probed"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as reply:  # noqa: S310 - scheme checked
            return reply.status == 200, f"HTTP {reply.status}"
    except urllib.error.HTTPError as exc:
        return False, f"HTTP {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        return False, f"unreachable: {reason}"


def run(
    *,
    target: str | None,
    grpc_listen: str | None,
    service: str,
    timeout: float,
    http_url: str | None,
    tls: ProbeTLS | None,
) -> int:
    if http_url:
        healthy, seen = check_http(http_url, timeout=timeout)
    else:
        try:
            where = target or local_target(grpc_listen)
        except ValueError as exc:
            print(f"bad GRPC_LISTEN: {exc}")  # noqa: T201
            return 1
        healthy, seen = check_grpc(where, service=service, timeout=timeout, tls=tls)
    print(seen)  # noqa: T201
    return 0 if healthy else 1
