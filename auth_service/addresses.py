"""`host:port` listen addresses (IPv4, [IPv6] and names): parsing, the local
address of a wildcard bind, and whether a port is free to bind."""

from __future__ import annotations

import contextlib
import ipaddress
import socket


def parse_host_port(value: str) -> tuple[str, int]:
    """Split `host:port`; raise ValueError with a readable reason when malformed."""
    text = value.strip()
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise ValueError("expected [IPv6]:PORT")
        port_text = rest[1:]
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep:
            raise ValueError("expected HOST:PORT")
    if not host:
        raise ValueError("expected HOST:PORT with a host")
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError("port must be a number from 0 to 65535")
    return host, int(port_text)


def is_loopback(host: str) -> bool:
    """True for localhost and loopback IP addresses."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def format_host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


_WILDCARDS = frozenset({"", "0.0.0.0", "::"})  # noqa: S104 - recognised, not bound


def local_address(listen: str, port: int | None = None) -> str:
    """Where a server bound to `listen` is reached from the same host: a wildcard
    host becomes 127.0.0.1; `port` replaces the configured one (e.g. the port a
    `:0` bind got)."""
    host, configured = parse_host_port(listen)
    host = host.strip("[]")
    if host in _WILDCARDS:
        host = "127.0.0.1"
    return format_host_port(host, configured if port is None else port)


def bind_problem(host: str, port: int, *, reuse_port: bool = False) -> str | None:
    """Why `host:port` cannot be bound right now (e.g. "address already in use"), or
    None. Port 0 is always free. `reuse_port` binds as SO_REUSEPORT servers do, so
    a port shared on purpose (`serve --workers N`) is not reported."""
    if port == 0:
        return None
    host = host.strip("[]")
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        return f"cannot resolve {host!r}: {exc.strerror}"
    family, kind, proto, _, address = infos[0]
    with contextlib.closing(socket.socket(family, kind, proto)) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port and hasattr(socket, "SO_REUSEPORT"):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        try:
            sock.bind(address)
        except OSError as exc:
            return (exc.strerror or str(exc)).lower()
    return None
