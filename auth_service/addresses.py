"""Parsing of `host:port` listen addresses (IPv4, [IPv6] and names)."""

from __future__ import annotations

import ipaddress


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
