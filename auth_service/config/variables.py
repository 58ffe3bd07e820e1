"""The environment variables auth-service reads: names, parsers and help text.

`auth_service.config` reads them (the only module that reads `os.environ`) and
builds `Settings`; the README's configuration table is generated from `ENV_VARS`
(`python scripts/config_table.py`).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from auth_client.contract import MAX_BATCH_IDS
from auth_service.addresses import parse_host_port
from auth_service.config.tokens import (
    TokenEntry,
    TokenFormatError,
    parse_tokens,
    read_token_file,
)


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


def _url(raw: str) -> str | None:
    value = raw.strip()
    if not value:
        return None
    if not value.startswith(("http://", "https://")) or len(value) <= len("https://"):
        raise ValueError("must be an http:// or https:// URL (OTLP/HTTP)")
    return value


def _otlp_protocol(raw: str) -> str:
    value = raw.strip()
    if value != "http/protobuf":
        raise ValueError("only http/protobuf: the image exports traces over OTLP/HTTP")
    return value


def _traces_exporter(raw: str) -> str:
    value = raw.strip().lower()
    if value not in {"otlp", "none"}:
        raise ValueError("one of otlp, none")
    return value


SAMPLERS = (
    "always_on",
    "always_off",
    "traceidratio",
    "parentbased_always_on",
    "parentbased_always_off",
    "parentbased_traceidratio",
)


def _sampler(raw: str) -> str:
    value = raw.strip().lower()
    if value not in SAMPLERS:
        raise ValueError(f"one of {', '.join(SAMPLERS)}")
    return value


def _ratio(raw: str) -> float | None:
    if not raw.strip():
        return None
    value = float(raw)
    if not 0.0 <= value <= 1.0:
        raise ValueError("a sampling ratio from 0 to 1")
    return value


# A BatchUserExists request with the most ids allowed, in canonical form, is
# 38 bytes per id (1 tag + 1 length + 36 characters): the size limit must admit it.
MIN_REQUEST_BYTES = 38 * MAX_BATCH_IDS


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
        "GRPC_MAX_CONNECTION_AGE_S",
        "max_connection_age_s",
        _non_negative_float,
        "close client connections after this long (calls in flight get 30 s more) so clients spread onto new replicas; 0 = never",
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
        f"largest accepted request message; at least {MIN_REQUEST_BYTES} (a full {MAX_BATCH_IDS}-id batch); larger is RESOURCE_EXHAUSTED",
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
        "DB_LOOKUP_WINDOW_MS",
        "lookup_window_ms",
        _non_negative_float,
        "under load, how long a UserExists lookup may wait to share a query with others (0 = never wait); a quiet server never waits",
    ),
    EnvVar(
        "STATE_CACHE_SIZE",
        "state_cache_size",
        _non_negative_int,
        "user states this process keeps to answer UserExists / BatchUserExists without a query; exact: every change to the users table is announced (LISTEN/NOTIFY) and drops its entry, and the cache is bypassed while that feed is down; 0 = off",
    ),
    EnvVar(
        "DB_STALL_TIMEOUT_MS",
        "stall_timeout_ms",
        _non_negative_int,
        "queries waiting and none answered for this long: new calls are UNAVAILABLE at once and health NOT_SERVING until the database answers (a tenth of it decides whether a hit concurrency limit is the database's fault or the caller's); 0 = off",
    ),
    EnvVar(
        "DB_CONNECT_TIMEOUT_S",
        "connect_timeout_s",
        _positive_float,
        "timeout for opening one database connection",
    ),
    EnvVar(
        "PII_RETENTION_S",
        "pii_retention_s",
        _non_negative_float,
        "how long a deleted user's personal data (username, display name, email) is kept before it is erased; 0 = erased in DeleteUser's own transaction",
    ),
    EnvVar(
        "PII_ERASURE_INTERVAL_S",
        "pii_erasure_interval_s",
        _positive_float,
        "how often `serve` erases the personal data that is due (and data of users deleted before erasure existed)",
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
    # Tracing: OpenTelemetry's standard variables (docs/tracing.md). Validated here;
    # the SDK reads them itself, with the rest of its OTEL_* variables.
    EnvVar(
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "otel_exporter_otlp_endpoint",
        _url,
        "base URL of an OTLP/HTTP receiver (spans go to its /v1/traces); setting it, or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, turns tracing on (docs/tracing.md)",
    ),
    EnvVar(
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "otel_exporter_otlp_traces_endpoint",
        _url,
        "full URL spans are posted to (instead of OTEL_EXPORTER_OTLP_ENDPOINT/v1/traces)",
    ),
    EnvVar(
        "OTEL_EXPORTER_OTLP_PROTOCOL",
        "otel_exporter_otlp_protocol",
        _otlp_protocol,
        "http/protobuf, the only protocol the image exports with",
    ),
    EnvVar(
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        "otel_exporter_otlp_traces_protocol",
        _otlp_protocol,
        "as OTEL_EXPORTER_OTLP_PROTOCOL, for spans",
    ),
    EnvVar(
        "OTEL_TRACES_EXPORTER",
        "otel_traces_exporter",
        _traces_exporter,
        "otlp, or none to turn tracing off while an endpoint is set",
    ),
    EnvVar(
        "OTEL_SDK_DISABLED",
        "otel_sdk_disabled",
        _bool,
        "true turns tracing off whatever else is set",
    ),
    EnvVar(
        "OTEL_SERVICE_NAME",
        "otel_service_name",
        _non_empty,
        "service.name of the spans (default auth-service, unless OTEL_RESOURCE_ATTRIBUTES names one)",
    ),
    EnvVar(
        "OTEL_TRACES_SAMPLER",
        "otel_traces_sampler",
        _sampler,
        f"which calls are traced: {', '.join(SAMPLERS)}; parentbased_* follow the caller's decision (its traceparent)",
    ),
    EnvVar(
        "OTEL_TRACES_SAMPLER_ARG",
        "otel_traces_sampler_arg",
        _ratio,
        "the ratio of traceidratio and parentbased_traceidratio, 0 to 1 (default 1)",
    ),
)
