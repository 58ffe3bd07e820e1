"""The grpc.aio server of a process: its options, the services on it, the port it
binds. `server.AuthServer` owns its lifecycle; this module only builds it.
"""

from __future__ import annotations

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from auth_client.contract import admin_pb2, auth_pb2, replication_pb2
from auth_service.addresses import bind_problem, parse_host_port
from auth_service.api.health import AuthHealthServicer
from auth_service.api.parsing import CORE_LIMIT_FACTOR, add_service
from auth_service.api.reflection import enable_reflection
from auth_service.api.rpc import CallPath
from auth_service.api.servicers import (
    AuthServicer,
    UserAdminServicer,
    UserReplicationServicer,
)
from auth_service.api.tls import ServerTLS
from auth_service.config import Settings

AUTH_SERVICE = auth_pb2.DESCRIPTOR.services_by_name["AuthService"]
ADMIN_SERVICE = admin_pb2.DESCRIPTOR.services_by_name["UserAdminService"]
REPLICATION_SERVICE = replication_pb2.DESCRIPTOR.services_by_name["UserReplicationService"]


def _connection_age(seconds: float) -> list[tuple[str, int]]:
    if seconds <= 0:
        return []
    return [
        ("grpc.max_connection_age_ms", int(seconds * 1000)),
        ("grpc.max_connection_age_grace_ms", 30_000),
    ]


class ServerStartError(RuntimeError):
    """The server could not start (e.g. the listen address is taken)."""


def check_can_bind(listen: str, doing: str, setting: str, *, reuse_port: bool = False) -> None:
    """One clear line when the address is taken, instead of gRPC core's log lines."""
    host, port = parse_host_port(listen)
    problem = bind_problem(host, port, reuse_port=reuse_port)
    if problem:
        raise ServerStartError(
            f"cannot {doing} {listen}: {problem} (choose another address with {setting})"
        )


def new_grpc_server(s: Settings) -> grpc.aio.Server:
    """An unstarted server with the limits and connection options of `s`."""
    return grpc.aio.server(
        options=[
            # A second server on a used port must fail, not silently share it.
            # `serve --workers N` shares the port on purpose (reuse_port).
            ("grpc.so_reuseport", 1 if s.reuse_port else 0),
            # Requests over MAX_REQUEST_BYTES are answered RESOURCE_EXHAUSTED (and
            # counted) before parsing; gRPC core refuses what is far beyond it.
            ("grpc.max_receive_message_length", CORE_LIMIT_FACTOR * s.max_request_bytes),
            ("grpc.max_send_message_length", 4 * 1024 * 1024),
            # HTTP/2 streams one connection may hold open (gRPC's default is
            # unlimited): bounds what one peer's half-sent requests can pin. Set
            # well above MAX_CONCURRENT_RPCS, so a burst meets our own admission
            # (RESOURCE_EXHAUSTED, counted and logged) rather than HTTP/2's
            # REFUSED_STREAM, which the server never sees.
            ("grpc.max_concurrent_streams", max(1024, 4 * s.max_concurrent_rpcs)),
            ("grpc.keepalive_permit_without_calls", 1),
            # Clients reconnect (and re-resolve) now and then, so new replicas
            # get a share of long-lived channels.
            *_connection_age(s.max_connection_age_s),
            ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
        ],
    )


def add_services(
    server: grpc.aio.Server,
    path: CallPath,
    auth: AuthServicer,
    admin: UserAdminServicer,
    replication: UserReplicationServicer,
) -> AuthHealthServicer:
    """AuthService, UserAdminService and UserReplicationService behind `path`,
    Health and reflection on `server`; the health servicer is returned for the
    HealthMonitor to drive."""
    add_service(server, AUTH_SERVICE, auth, path)
    add_service(server, ADMIN_SERVICE, admin, path)
    add_service(server, REPLICATION_SERVICE, replication, path)
    health_servicer = AuthHealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    enable_reflection(
        server,
        (
            AUTH_SERVICE.full_name,
            ADMIN_SERVICE.full_name,
            REPLICATION_SERVICE.full_name,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
        ),
    )
    return health_servicer


def bind(server: grpc.aio.Server, listen: str, tls: ServerTLS | None, *, reuse_port: bool) -> int:
    """Bind `listen` (plaintext, or TLS when `tls` is set); the port bound."""
    check_can_bind(listen, "listen on", "GRPC_LISTEN or --listen", reuse_port=reuse_port)
    try:
        if tls is None:
            port = server.add_insecure_port(listen)
        else:
            port = server.add_secure_port(listen, tls.credentials())
    except RuntimeError as exc:
        raise ServerStartError(f"cannot listen on {listen}: {exc}") from exc
    if port == 0:
        raise ServerStartError(f"cannot listen on {listen} (address in use?)")
    return port
