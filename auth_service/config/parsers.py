"""The parsers of auth-service's environment variables: each takes the raw text and
returns the value `Settings` holds, or raises ValueError with a message in plain
words that says what is expected, and for numbers and switches what it got ("must be
a whole number, got 'abc'"; never Python's "invalid literal for int()", never the
value of a secret). `variables` pairs them with names.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path

from auth_service.addresses import parse_host_port
from auth_service.config.tokens import (
    TokenEntry,
    TokenFormatError,
    parse_tokens,
    read_token_file,
)


def _got(raw: str) -> str:
    """The value as a problem quotes it (numbers and switches only: no secrets)."""
    text = raw.strip()
    return repr(text if len(text) <= 40 else text[:37] + "...")


def boolean(raw: str) -> bool:
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise ValueError(f"must be true or false (or 1/0, yes/no, on/off), got {_got(raw)}")


def whole_number(raw: str) -> int:
    """An integer such as 10 or -1 (range checks are the caller's)."""
    try:
        return int(raw.strip())
    except ValueError:
        raise ValueError(f"must be a whole number, got {_got(raw)}") from None


def number(raw: str) -> float:
    """A finite decimal number such as 2, 0.5 or 1e3."""
    try:
        value = float(raw.strip())
    except ValueError:
        raise ValueError(f"must be a number, got {_got(raw)}") from None
    if not math.isfinite(value):
        raise ValueError(f"must be a finite number, got {_got(raw)}")
    return value


def positive_int(raw: str) -> int:
    value = whole_number(raw)
    if value <= 0:
        raise ValueError(f"must be a whole number greater than 0, got {_got(raw)}")
    return value


def non_negative_float(raw: str) -> float:
    value = number(raw)
    if value < 0:
        raise ValueError(f"must be a number, 0 or more, got {_got(raw)}")
    return value


def positive_float(raw: str) -> float:
    value = number(raw)
    if value <= 0:
        raise ValueError(f"must be a number greater than 0, got {_got(raw)}")
    return value


def address(raw: str) -> str:
    parse_host_port(raw)
    return raw.strip()


def optional_address(raw: str) -> str | None:
    return address(raw) if raw.strip() else None


def token_list(raw: str) -> tuple[str, ...]:
    tokens = tuple(t.strip() for t in raw.split(",") if t.strip())
    for token in tokens:
        if len(token) < 16:
            raise ValueError("every token must be at least 16 characters")
    return tokens


def database_url(raw: str) -> str:
    value = raw.strip()
    if not value.startswith(("postgres://", "postgresql://")):
        raise ValueError("must start with postgres:// or postgresql://")
    return value


def database_urls(raw: str) -> tuple[str, ...]:
    """Comma-separated PostgreSQL URLs (none when empty)."""
    return tuple(database_url(part) for part in raw.split(",") if part.strip())


def one_of(*values: str, upper: bool = False) -> Callable[[str], str]:
    """A parser that accepts one of `values` (case-insensitive; upper- or
    lower-cased as they are written)."""

    def parse(raw: str) -> str:
        value = raw.strip().upper() if upper else raw.strip().lower()
        if value not in values:
            raise ValueError(f"one of {', '.join(values)}")
        return value

    return parse


log_level = one_of("DEBUG", "INFO", "WARNING", "ERROR", upper=True)
log_format = one_of("json", "text")
traces_exporter = one_of("otlp", "none")


def non_empty(raw: str) -> str:
    if not raw.strip():
        raise ValueError("must not be empty")
    return raw.strip()


def bootstrap_servers(raw: str) -> str | None:
    """Comma-separated host:port list; empty means "not configured"."""
    servers = [s.strip() for s in raw.split(",") if s.strip()]
    for server in servers:
        parse_host_port(server)
    return ",".join(servers) or None


def topic(raw: str) -> str:
    value = raw.strip()
    if not value or len(value) > 249 or not all(c.isalnum() or c in "._-" for c in value):
        raise ValueError("1-249 characters from a-z, A-Z, 0-9, '.', '_', '-'")
    return value


def optional_topic(raw: str) -> str | None:
    """A topic name, or None (off) when empty."""
    return topic(raw) if raw.strip() else None


def non_negative_int(raw: str) -> int:
    value = whole_number(raw)
    if value < 0:
        raise ValueError(f"must be a whole number, 0 or more, got {_got(raw)}")
    return value


def optional_non_negative_int(raw: str) -> int | None:
    return non_negative_int(raw) if raw.strip() else None


def token_entries(raw: str) -> tuple[TokenEntry, ...]:
    try:
        return tuple(parse_tokens(raw, source="entry"))
    except TokenFormatError as exc:  # names entries, never token text
        raise ValueError(str(exc)) from None


def token_file(raw: str) -> str | None:
    path = raw.strip()
    if not path:
        return None
    try:
        read_token_file(path)
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from None
    except TokenFormatError as exc:
        raise ValueError(f"{path}: {exc}") from None
    return path


def readable_file(raw: str) -> str | None:
    path = raw.strip()
    if not path:
        return None
    if not Path(path).is_file() or not os.access(path, os.R_OK):
        raise ValueError(f"{path} is not a readable file")
    return path


def url(raw: str) -> str | None:
    value = raw.strip()
    if not value:
        return None
    if not value.startswith(("http://", "https://")) or len(value) <= len("https://"):
        raise ValueError("must be an http:// or https:// URL (OTLP/HTTP)")
    return value


def otlp_protocol(raw: str) -> str:
    value = raw.strip()
    if value != "http/protobuf":
        raise ValueError("only http/protobuf: the image exports traces over OTLP/HTTP")
    return value


SAMPLERS = (
    "always_on",
    "always_off",
    "traceidratio",
    "parentbased_always_on",
    "parentbased_always_off",
    "parentbased_traceidratio",
)


sampler = one_of(*SAMPLERS)


def ratio(raw: str) -> float | None:
    if not raw.strip():
        return None
    value = number(raw)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"must be a sampling ratio from 0 to 1, got {_got(raw)}")
    return value
