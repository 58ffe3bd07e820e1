"""Settings, read from the environment in this one module and validated at start-up.

`Settings.from_env()` collects every problem and raises one `ConfigError` that names
each bad variable, so an operator fixes a deployment in one round. Nothing else in
the service (and nothing in `auth_client`) reads `os.environ`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from auth_service.addresses import parse_host_port


class ConfigError(ValueError):
    """One or more configuration values are missing or invalid."""

    def __init__(self, problems: Mapping[str, str]) -> None:
        self.problems = dict(problems)
        lines = "\n".join(f"  {key}: {why}" for key, why in sorted(self.problems.items()))
        super().__init__(f"invalid configuration ({len(self.problems)} problem(s)):\n{lines}")


def _bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise ValueError("expected true/false")


def _positive_int(raw: str) -> int:
    value = int(raw)
    if value <= 0:
        raise ValueError("must be a positive integer")
    return value


def _non_negative_float(raw: str) -> float:
    value = float(raw)
    if value < 0 or value != value:  # noqa: PLR0124 - NaN check
        raise ValueError("must be a non-negative number")
    return value


def _positive_float(raw: str) -> float:
    value = _non_negative_float(raw)
    if value == 0:
        raise ValueError("must be greater than zero")
    return value


def _address(raw: str) -> str:
    parse_host_port(raw)
    return raw.strip()


def _optional_address(raw: str) -> str | None:
    return _address(raw) if raw.strip() else None


def _tokens(raw: str) -> tuple[str, ...]:
    tokens = tuple(t.strip() for t in raw.split(",") if t.strip())
    for token in tokens:
        if len(token) < 16:
            raise ValueError("every token must be at least 16 characters")
    return tokens


def _database_url(raw: str) -> str:
    value = raw.strip()
    if not value.startswith(("postgres://", "postgresql://")):
        raise ValueError("must start with postgres:// or postgresql://")
    return value


def _log_level(raw: str) -> str:
    value = raw.strip().upper()
    if value not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
        raise ValueError("one of DEBUG, INFO, WARNING, ERROR")
    return value


def _log_format(raw: str) -> str:
    value = raw.strip().lower()
    if value not in {"json", "text"}:
        raise ValueError("one of json, text")
    return value


def _non_empty(raw: str) -> str:
    if not raw.strip():
        raise ValueError("must not be empty")
    return raw.strip()


def _bootstrap_servers(raw: str) -> str | None:
    """Comma-separated host:port list; empty means "not configured"."""
    servers = [s.strip() for s in raw.split(",") if s.strip()]
    for server in servers:
        parse_host_port(server)
    return ",".join(servers) or None


def _topic(raw: str) -> str:
    value = raw.strip()
    if not value or len(value) > 249 or not all(c.isalnum() or c in "._-" for c in value):
        raise ValueError("1-249 characters from a-z, A-Z, 0-9, '.', '_', '-'")
    return value


@dataclass(frozen=True)
class EnvVar:
    """One documented environment variable and the Settings attribute it sets."""

    name: str
    attr: str
    parse: Callable[[str], Any]
    help: str
    required: bool = False


ENV_VARS: tuple[EnvVar, ...] = (
    EnvVar("DATABASE_URL", "database_url", _database_url, "PostgreSQL URL of the auth database", required=True),
    EnvVar("GRPC_LISTEN", "listen", _address, "host:port the gRPC server binds (port 0 = any free port)"),
    EnvVar("ADMIN_TOKENS", "admin_tokens", _tokens, "comma-separated bearer tokens for UserAdminService (16+ chars each); none = admin API rejects every call"),
    EnvVar("DB_POOL_MIN_SIZE", "pool_min_size", int, "connections opened at start-up and kept"),
    EnvVar("DB_POOL_MAX_SIZE", "pool_max_size", _positive_int, "maximum connections to PostgreSQL"),
    EnvVar("DB_STATEMENT_TIMEOUT_MS", "statement_timeout_ms", _positive_int, "upper bound for one query; the caller's deadline bounds it further"),
    EnvVar("DB_CONNECT_TIMEOUT_S", "connect_timeout_s", _positive_float, "timeout for opening one database connection"),
    EnvVar("HEALTH_CHECK_INTERVAL_S", "health_interval_s", _positive_float, "how often the database is pinged for the gRPC health status"),
    EnvVar("SHUTDOWN_GRACE_S", "shutdown_grace_s", _non_negative_float, "on SIGTERM, how long in-flight calls may finish"),
    EnvVar("LOG_LEVEL", "log_level", _log_level, "DEBUG, INFO, WARNING or ERROR"),
    EnvVar("LOG_FORMAT", "log_format", _log_format, "json (one object per line) or text"),
    EnvVar("KAFKA_BOOTSTRAP_SERVERS", "kafka_bootstrap_servers", _bootstrap_servers, "comma-separated host:port of the Kafka brokers the outbox relay publishes to; required unless RELAY_ENABLED=false"),
    EnvVar("KAFKA_TOPIC", "kafka_topic", _topic, "topic of the user_deleted events"),
    EnvVar("KAFKA_ENABLE_IDEMPOTENCE", "kafka_enable_idempotence", _bool, "idempotent producer (turn on against real Kafka; the embedded broker does not support it)"),
    EnvVar("KAFKA_REQUEST_TIMEOUT_S", "kafka_request_timeout_s", _positive_float, "how long one publish may wait for the brokers' acknowledgement before the relay retries"),
    EnvVar("RELAY_ENABLED", "relay_enabled", _bool, "run the outbox relay inside `auth-service serve` (false when `auth-service relay` runs separately)"),
    EnvVar("RELAY_POLL_INTERVAL_S", "relay_poll_interval_s", _positive_float, "how often the relay looks for unpublished events when no NOTIFY woke it"),
    EnvVar("RELAY_BATCH_SIZE", "relay_batch_size", _positive_int, "outbox rows claimed and published per batch"),
    EnvVar("RELAY_MAX_BACKOFF_S", "relay_max_backoff_s", _positive_float, "upper bound of the retry delay while Kafka or PostgreSQL is down"),
    EnvVar("OUTBOX_RETENTION_S", "outbox_retention_s", _positive_float, "published outbox rows are deleted after this many seconds (unpublished rows never)"),
)


@dataclass(frozen=True)
class Settings:
    """Validated configuration of one auth-service process."""

    database_url: str = field(repr=False)
    listen: str = "127.0.0.1:50051"
    admin_tokens: tuple[str, ...] = field(default=(), repr=False)
    pool_min_size: int = 2
    pool_max_size: int = 10
    statement_timeout_ms: int = 2000
    connect_timeout_s: float = 5.0
    health_interval_s: float = 1.0
    shutdown_grace_s: float = 10.0
    log_level: str = "INFO"
    log_format: str = "json"
    kafka_bootstrap_servers: str | None = None
    kafka_topic: str = "user_deleted"
    kafka_enable_idempotence: bool = False
    kafka_request_timeout_s: float = 10.0
    relay_enabled: bool = True
    relay_poll_interval_s: float = 1.0
    relay_batch_size: int = 100
    relay_max_backoff_s: float = 30.0
    outbox_retention_s: float = 7 * 24 * 3600.0
    # Not from the environment: `auth-service dev` turns it on for local use.
    allow_unauthenticated_reads: bool = True

    def __post_init__(self) -> None:
        problems = self._cross_check()
        if problems:
            raise ConfigError(problems)

    def _cross_check(self) -> dict[str, str]:
        problems: dict[str, str] = {}
        if self.pool_min_size < 0:
            problems["DB_POOL_MIN_SIZE"] = "must not be negative"
        elif self.pool_min_size > self.pool_max_size:
            problems["DB_POOL_MIN_SIZE"] = "must not exceed DB_POOL_MAX_SIZE"
        return problems

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Build settings from `env` (default: the process environment).

        `overrides` (attribute names) win over the environment, e.g. CLI flags.
        """
        source = os.environ if env is None else env
        values: dict[str, Any] = {}
        problems: dict[str, str] = {}
        for var in ENV_VARS:
            if var.attr in overrides:
                continue
            raw = source.get(var.name)
            if raw is None or (raw.strip() == "" and var.required):
                if var.required:
                    problems[var.name] = "is required"
                continue
            try:
                values[var.attr] = var.parse(raw)
            except ValueError as exc:
                problems[var.name] = str(exc) or "invalid value"
        values.update(overrides)
        # Settings built in code (tests, `auth-service dev`) may leave Kafka out and
        # get no relay; a deployment must say where to publish or turn the relay off.
        if values.get("relay_enabled", True) and not values.get("kafka_bootstrap_servers"):
            problems.setdefault(
                "KAFKA_BOOTSTRAP_SERVERS", "is required unless RELAY_ENABLED=false"
            )
        if problems:
            raise ConfigError(problems)
        try:
            return cls(**values)
        except ConfigError:
            raise
        except TypeError as exc:  # pragma: no cover - programming error in overrides
            raise ConfigError({"<overrides>": str(exc)}) from exc

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)


def cli_default(name: str, default: str | None = None) -> str | None:
    """Environment fallback for a command-line flag (e.g. AUTH_SERVICE_TARGET)."""
    value = os.environ.get(name)
    return value if value else default


CLI_ENV_VARS: dict[str, str] = {
    "AUTH_SERVICE_TARGET": "target of `auth-service users ...` (default 127.0.0.1:50051)",
    "AUTH_SERVICE_TOKEN": "bearer token sent by `auth-service users ...`",
}
