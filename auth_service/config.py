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
from pathlib import Path
from typing import Any

from auth_service.addresses import parse_host_port
from auth_service.auth import TokenEntry, TokenFormatError, parse_tokens, read_token_file


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


def _non_negative_int(raw: str) -> int:
    value = int(raw)
    if value < 0:
        raise ValueError("must be a non-negative integer")
    return value


def _optional_non_negative_int(raw: str) -> int | None:
    return _non_negative_int(raw) if raw.strip() else None


def _token_entries(raw: str) -> tuple[TokenEntry, ...]:
    try:
        return tuple(parse_tokens(raw, source="entry"))
    except TokenFormatError as exc:  # names entries, never token text
        raise ValueError(str(exc)) from None


def _token_file(raw: str) -> str | None:
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


def _readable_file(raw: str) -> str | None:
    path = raw.strip()
    if not path:
        return None
    if not Path(path).is_file() or not os.access(path, os.R_OK):
        raise ValueError(f"{path} is not a readable file")
    return path


# A BatchUserExists request with the maximum 1000 canonical ids is 38,000 bytes
# (1 tag + 1 length + 36 characters each): the request size limit must admit it.
MIN_REQUEST_BYTES = 38_000


@dataclass(frozen=True)
class EnvVar:
    """One documented environment variable and the Settings attribute it sets."""

    name: str
    attr: str
    parse: Callable[[str], Any]
    help: str
    required: bool = False


ENV_VARS: tuple[EnvVar, ...] = (
    EnvVar(
        "DATABASE_URL",
        "database_url",
        _database_url,
        "PostgreSQL URL of the auth database",
        required=True,
    ),
    EnvVar(
        "GRPC_LISTEN",
        "listen",
        _address,
        "host:port the gRPC server binds (port 0 = any free port)",
    ),
    EnvVar(
        "ADMIN_TOKENS",
        "admin_tokens",
        _tokens,
        "comma-separated bearer tokens of the caller `admin` (scopes users:admin and users:read; 16+ chars each); none and no admin in AUTH_TOKENS = admin API rejects every call",
    ),
    EnvVar(
        "AUTH_TOKENS",
        "auth_tokens",
        _token_entries,
        "caller tokens: `NAME SCOPES TOKEN` entries separated by `;` or newlines, SCOPES a comma list of users:read, users:admin (see docs/security.md)",
    ),
    EnvVar(
        "AUTH_TOKENS_FILE",
        "auth_tokens_file",
        _token_file,
        "file of `NAME SCOPES TOKEN` lines (e.g. a mounted secret), added to AUTH_TOKENS; re-read when it changes",
    ),
    EnvVar(
        "TOKENS_RELOAD_INTERVAL_S",
        "tokens_reload_interval_s",
        _non_negative_float,
        "how often AUTH_TOKENS_FILE is checked for changes (0 = read only at start-up)",
    ),
    EnvVar(
        "TLS_CERT_FILE",
        "tls_cert_file",
        _readable_file,
        "PEM server certificate (chain); with TLS_KEY_FILE turns TLS on; re-read when it changes",
    ),
    EnvVar("TLS_KEY_FILE", "tls_key_file", _readable_file, "PEM private key of TLS_CERT_FILE"),
    EnvVar(
        "TLS_CLIENT_CA_FILE",
        "tls_client_ca_file",
        _readable_file,
        "PEM CA bundle: when set, clients must present a certificate it signed (mTLS)",
    ),
    EnvVar(
        "ALLOW_INSECURE",
        "allow_insecure",
        _bool,
        "let `serve` listen without TLS on a non-loopback address (a proxy or mesh in front terminates TLS)",
    ),
    EnvVar(
        "MAX_REQUEST_BYTES",
        "max_request_bytes",
        _positive_int,
        f"largest accepted request message; at least {MIN_REQUEST_BYTES} (a full 1000-id batch); larger is RESOURCE_EXHAUSTED",
    ),
    EnvVar(
        "MAX_CONCURRENT_RPCS",
        "max_concurrent_rpcs",
        _non_negative_int,
        "API calls in flight per process; more are answered RESOURCE_EXHAUSTED at once (0 = no bound)",
    ),
    EnvVar(
        "MAX_CONCURRENT_RPCS_PER_CALLER",
        "max_concurrent_rpcs_per_caller",
        _optional_non_negative_int,
        "API calls in flight per caller and process (default half of MAX_CONCURRENT_RPCS; 0 = no separate bound)",
    ),
    EnvVar(
        "RATE_LIMIT_RPS",
        "rate_limit_rps",
        _non_negative_float,
        "calls per second each caller may make to one process; more are RESOURCE_EXHAUSTED (0 = no rate limit)",
    ),
    EnvVar(
        "RATE_LIMIT_BURST",
        "rate_limit_burst",
        _non_negative_int,
        "token-bucket depth of RATE_LIMIT_RPS (default: one second's worth)",
    ),
    EnvVar("DB_POOL_MIN_SIZE", "pool_min_size", int, "connections opened at start-up and kept"),
    EnvVar("DB_POOL_MAX_SIZE", "pool_max_size", _positive_int, "maximum connections to PostgreSQL"),
    EnvVar(
        "DB_STATEMENT_TIMEOUT_MS",
        "statement_timeout_ms",
        _positive_int,
        "upper bound for one query; the caller's deadline bounds it further",
    ),
    EnvVar(
        "DB_LOOKUP_CONCURRENCY",
        "lookup_concurrency",
        int,
        "UserExists queries running at once; lookups arriving meanwhile share the next query (0 = one query per call)",
    ),
    EnvVar(
        "DB_CONNECT_TIMEOUT_S",
        "connect_timeout_s",
        _positive_float,
        "timeout for opening one database connection",
    ),
    EnvVar(
        "HEALTH_CHECK_INTERVAL_S",
        "health_interval_s",
        _positive_float,
        "how often the database is pinged for the gRPC health status",
    ),
    EnvVar(
        "SHUTDOWN_GRACE_S",
        "shutdown_grace_s",
        _non_negative_float,
        "on SIGTERM, how long in-flight calls may finish",
    ),
    EnvVar("LOG_LEVEL", "log_level", _log_level, "DEBUG, INFO, WARNING or ERROR"),
    EnvVar("LOG_FORMAT", "log_format", _log_format, "json (one object per line) or text"),
    EnvVar(
        "METRICS_LISTEN",
        "metrics_listen",
        _optional_address,
        "host:port of the Prometheus /metrics HTTP endpoint of `serve` and `relay` (unset = no endpoint; plaintext, keep it internal)",
    ),
    EnvVar(
        "KAFKA_BOOTSTRAP_SERVERS",
        "kafka_bootstrap_servers",
        _bootstrap_servers,
        "comma-separated host:port of the Kafka brokers the outbox relay publishes to; required unless RELAY_ENABLED=false",
    ),
    EnvVar("KAFKA_TOPIC", "kafka_topic", _topic, "topic of the user_deleted events"),
    EnvVar(
        "KAFKA_ENABLE_IDEMPOTENCE",
        "kafka_enable_idempotence",
        _bool,
        "idempotent producer (turn on against real Kafka; the embedded broker does not support it)",
    ),
    EnvVar(
        "KAFKA_REQUEST_TIMEOUT_S",
        "kafka_request_timeout_s",
        _positive_float,
        "how long one publish may wait for the brokers' acknowledgement before the relay retries",
    ),
    EnvVar(
        "RELAY_ENABLED",
        "relay_enabled",
        _bool,
        "run the outbox relay inside `auth-service serve` (false when `auth-service relay` runs separately)",
    ),
    EnvVar(
        "RELAY_POLL_INTERVAL_S",
        "relay_poll_interval_s",
        _positive_float,
        "how often the relay looks for unpublished events when no NOTIFY woke it",
    ),
    EnvVar(
        "RELAY_BATCH_SIZE",
        "relay_batch_size",
        _positive_int,
        "outbox rows claimed and published per batch",
    ),
    EnvVar(
        "RELAY_MAX_BACKOFF_S",
        "relay_max_backoff_s",
        _positive_float,
        "upper bound of the retry delay while Kafka or PostgreSQL is down",
    ),
    EnvVar(
        "OUTBOX_RETENTION_S",
        "outbox_retention_s",
        _positive_float,
        "published outbox rows are deleted after this many seconds (unpublished rows never)",
    ),
)


@dataclass(frozen=True)
class Settings:
    """Validated configuration of one auth-service process."""

    database_url: str = field(repr=False)
    listen: str = "127.0.0.1:50051"
    admin_tokens: tuple[str, ...] = field(default=(), repr=False)
    auth_tokens: tuple[TokenEntry, ...] = field(default=(), repr=False)
    auth_tokens_file: str | None = None
    tokens_reload_interval_s: float = 5.0
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    tls_client_ca_file: str | None = None
    allow_insecure: bool = False
    max_request_bytes: int = 64 * 1024
    max_concurrent_rpcs: int = 256
    max_concurrent_rpcs_per_caller: int | None = None
    rate_limit_rps: float = 0.0
    rate_limit_burst: int = 0
    pool_min_size: int = 2
    pool_max_size: int = 10
    statement_timeout_ms: int = 2000
    connect_timeout_s: float = 5.0
    lookup_concurrency: int = 2
    # Not from the environment: set for the processes of `serve --workers N`.
    reuse_port: bool = False
    health_interval_s: float = 1.0
    shutdown_grace_s: float = 10.0
    log_level: str = "INFO"
    log_format: str = "json"
    metrics_listen: str | None = None
    kafka_bootstrap_servers: str | None = None
    kafka_topic: str = "user_deleted"
    kafka_enable_idempotence: bool = False
    kafka_request_timeout_s: float = 10.0
    relay_enabled: bool = True
    relay_poll_interval_s: float = 1.0
    relay_batch_size: int = 100
    relay_max_backoff_s: float = 30.0
    outbox_retention_s: float = 7 * 24 * 3600.0
    # Not from the environment: only `auth-service dev` (and test fixtures) turn it
    # on; AuthService then answers callers without a known token as `anonymous`.
    allow_unauthenticated_reads: bool = False

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
        if not 0 <= self.lookup_concurrency <= self.pool_max_size:
            problems["DB_LOOKUP_CONCURRENCY"] = "must be from 0 to DB_POOL_MAX_SIZE"
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            missing = "TLS_KEY_FILE" if self.tls_cert_file else "TLS_CERT_FILE"
            problems[missing] = "TLS_CERT_FILE and TLS_KEY_FILE must be set together"
        if self.tls_client_ca_file and not self.tls_cert_file:
            problems["TLS_CLIENT_CA_FILE"] = "mTLS needs TLS_CERT_FILE and TLS_KEY_FILE too"
        if self.max_request_bytes < MIN_REQUEST_BYTES:
            problems["MAX_REQUEST_BYTES"] = (
                f"must be at least {MIN_REQUEST_BYTES} so a 1000-id batch fits"
            )
        per_caller = self.max_concurrent_rpcs_per_caller
        if per_caller and self.max_concurrent_rpcs and per_caller > self.max_concurrent_rpcs:
            problems["MAX_CONCURRENT_RPCS_PER_CALLER"] = "must not exceed MAX_CONCURRENT_RPCS"
        if self.rate_limit_burst and not self.rate_limit_rps:
            problems["RATE_LIMIT_BURST"] = "has no effect without RATE_LIMIT_RPS"
        return problems

    @property
    def per_caller_concurrency(self) -> int:
        """MAX_CONCURRENT_RPCS_PER_CALLER, defaulting to half the global bound."""
        if self.max_concurrent_rpcs_per_caller is not None:
            return self.max_concurrent_rpcs_per_caller
        return max(1, self.max_concurrent_rpcs // 2) if self.max_concurrent_rpcs else 0

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
            problems.setdefault("KAFKA_BOOTSTRAP_SERVERS", "is required unless RELAY_ENABLED=false")
        if problems:
            # Also judge the cross-field rules (defaults standing in for the bad
            # values), so one error names every problem.
            probe = {"database_url": "postgresql://placeholder/db", **values}
            try:
                cls(**probe)
            except ConfigError as exc:
                for key, why in exc.problems.items():
                    problems.setdefault(key, why)
            except TypeError:  # pragma: no cover - programming error in overrides
                pass
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
    return value or default


CLI_ENV_VARS: dict[str, str] = {
    "AUTH_SERVICE_TARGET": "target of `auth-service users ...` (default 127.0.0.1:50051)",
    "AUTH_SERVICE_TOKEN": "bearer token sent by `auth-service users ...`",
}
