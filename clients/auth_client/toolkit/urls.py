"""The database URLs `auth-toolkit` commands take (`--database-url`): checked before
anything connects, so a typo is one plain sentence and never a Python message
(`invalid literal for int()`), and never echoes the URL (it may hold a password).

`database_url` is the argparse type of every `--database-url` flag; `with_database`
and `split_password` build the scratch database's URL and the environment of
libpq tools (pg_dump) from it.
"""

from __future__ import annotations

import argparse
import urllib.parse

__all__ = ["DatabaseUrlError", "database_url", "split_password", "with_database"]

SCHEMES = ("postgresql", "postgres")
EXAMPLE = "postgresql://user:password@host:5432/dbname"


class DatabaseUrlError(argparse.ArgumentTypeError):
    """The URL cannot name a PostgreSQL database; the message says why in plain words
    and shows what one looks like, without the URL itself."""


def _check_port(port: str, where: str) -> None:
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise DatabaseUrlError(
            f"the port {port!r} {where} is not a number from 1 to 65535 (a database URL"
            f" looks like {EXAMPLE})"
        )


def _check_host(host: str) -> None:
    """`host`, `host:port`, `[v6]` or `[v6]:port`; an empty host means the default."""
    if host.startswith("["):
        address, bracket, rest = host[1:].partition("]")
        if not bracket or not address:
            raise DatabaseUrlError(
                f"an IPv6 address in the URL must be written in [ ] (like {EXAMPLE.replace('host', '[::1]')})"
            )
        if rest:
            if not rest.startswith(":"):
                raise DatabaseUrlError(f"unexpected text after the IPv6 address ]: {rest!r}")
            _check_port(rest[1:], "after the host")
        return
    if "]" in host:
        raise DatabaseUrlError("an IPv6 address in the URL has a ] without its [")
    name, colon, port = host.rpartition(":")
    if colon:
        _check_port(port, f"after the host {name!r}" if name else "after the host")


def check_database_url(text: str) -> str:
    """`text` when it can name a PostgreSQL database; DatabaseUrlError otherwise."""
    if not text.strip():
        raise DatabaseUrlError(f"the database URL is empty (it looks like {EXAMPLE})")
    scheme, sep, rest = text.partition("://")
    if not sep or scheme.lower() not in SCHEMES:
        raise DatabaseUrlError(f"a database URL starts with postgresql:// (like {EXAMPLE})")
    netloc = rest.split("/", 1)[0].split("?", 1)[0]
    hosts = netloc.rpartition("@")[2]  # user:password@ never reaches a message
    for host in hosts.split(","):
        _check_host(host)
    query = text.partition("?")[2]
    for key, value in urllib.parse.parse_qsl(query, keep_blank_values=True):
        if key == "port":
            for port in value.split(","):
                _check_port(port, "in ?port=")
    return text


def database_url(text: str) -> str:
    """The argparse type of `--database-url`: a bad URL is a usage error (exit 2)."""
    return check_database_url(text)


def with_database(url: str, name: str) -> str:
    """`url` naming database `name` instead (query parameters kept)."""
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit(parts._replace(path="/" + urllib.parse.quote(name, safe="")))


def split_password(url: str) -> tuple[str, str | None]:
    """(`url` without its password, the password): for a libpq tool, which reads the
    password from PGPASSWORD, so it never shows in its command line."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url, None
    userinfo, _, hosts = parts.netloc.rpartition("@")
    user = userinfo.partition(":")[0]
    bare = parts._replace(netloc=f"{user}@{hosts}" if user else hosts)
    return urllib.parse.urlunsplit(bare), urllib.parse.unquote(parts.password)
