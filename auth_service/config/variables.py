"""The environment variables auth-service reads: names, parsers (from `parsers`) and
help text.

`auth_service.config` reads them (the only module that reads `os.environ`) and
builds `Settings`; the README's configuration table is generated from `ENV_VARS`
(`python scripts/config_table.py`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from auth_client.contract import MAX_BATCH_IDS
from auth_service.config import parsers as p
from auth_service.config.parsers import SAMPLERS

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
        p.database_url,
        "PostgreSQL URL of the auth database",
        required=True,
    ),
    EnvVar(
        "DATABASE_READ_URL",
        "database_read_urls",
        p.database_urls,
        "PostgreSQL URLs of read replicas (hot standbys of DATABASE_URL), comma-separated: UserExists, GetUser, BatchUserExists and the index loads read them; writes, the change feed, the outbox and NOT_FOUND answers use the primary; empty = read the primary",
    ),
    EnvVar(
        "DATABASE_READ_MAX_LAG_MS",
        "read_max_lag_ms",
        p.positive_int,
        "a replica further behind the primary than this (or not answering) is not read until it catches up: lookups go to the primary meanwhile; its lag is checked four times per this period",
    ),
    EnvVar(
        "GRPC_LISTEN",
        "listen",
        p.address,
        "host:port the gRPC server binds (port 0 = any free port)",
    ),
    EnvVar(
        "GRPC_MAX_CONNECTION_AGE_S",
        "max_connection_age_s",
        p.non_negative_float,
        "close client connections after this long (calls in flight get 30 s more) so clients spread onto new replicas; 0 = never",
    ),
    EnvVar(
        "ADMIN_TOKENS",
        "admin_tokens",
        p.token_list,
        "comma-separated bearer tokens of the caller `admin` (scopes users:admin and users:read; 16+ chars each); none and no admin in AUTH_TOKENS = admin API rejects every call",
    ),
    EnvVar(
        "AUTH_TOKENS",
        "auth_tokens",
        p.token_entries,
        "caller tokens: `NAME SCOPES TOKEN` entries separated by `;` or newlines, SCOPES a comma list of users:read, users:admin (see docs/security.md)",
    ),
    EnvVar(
        "AUTH_TOKENS_FILE",
        "auth_tokens_file",
        p.token_file,
        "file of `NAME SCOPES TOKEN` lines (e.g. a mounted secret), added to AUTH_TOKENS; re-read when it changes",
    ),
    EnvVar(
        "TOKENS_RELOAD_INTERVAL_S",
        "tokens_reload_interval_s",
        p.non_negative_float,
        "how often AUTH_TOKENS_FILE is checked for changes (0 = read only at start-up)",
    ),
    EnvVar(
        "TLS_CERT_FILE",
        "tls_cert_file",
        p.readable_file,
        "PEM server certificate (chain); with TLS_KEY_FILE turns TLS on; re-read when it changes",
    ),
    EnvVar("TLS_KEY_FILE", "tls_key_file", p.readable_file, "PEM private key of TLS_CERT_FILE"),
    EnvVar(
        "TLS_CLIENT_CA_FILE",
        "tls_client_ca_file",
        p.readable_file,
        "PEM CA bundle: when set, clients must present a certificate it signed (mTLS)",
    ),
    EnvVar(
        "ALLOW_INSECURE",
        "allow_insecure",
        p.boolean,
        "let `serve` listen without TLS on a non-loopback address (a proxy or mesh in front terminates TLS)",
    ),
    EnvVar(
        "MAX_REQUEST_BYTES",
        "max_request_bytes",
        p.positive_int,
        f"largest accepted request message; at least {MIN_REQUEST_BYTES} (a full {MAX_BATCH_IDS}-id batch); larger is RESOURCE_EXHAUSTED",
    ),
    EnvVar(
        "MAX_CONCURRENT_RPCS",
        "max_concurrent_rpcs",
        p.non_negative_int,
        "API calls in flight per process; more are answered RESOURCE_EXHAUSTED at once (0 = no bound)",
    ),
    EnvVar(
        "MAX_CONCURRENT_RPCS_PER_CALLER",
        "max_concurrent_rpcs_per_caller",
        p.optional_non_negative_int,
        "API calls in flight per caller and process (default half of MAX_CONCURRENT_RPCS; 0 = no separate bound)",
    ),
    EnvVar(
        "RATE_LIMIT_RPS",
        "rate_limit_rps",
        p.non_negative_float,
        "calls per second each caller may make to one process; more are RESOURCE_EXHAUSTED (0 = no rate limit)",
    ),
    EnvVar(
        "RATE_LIMIT_BURST",
        "rate_limit_burst",
        p.non_negative_int,
        "token-bucket depth of RATE_LIMIT_RPS (default: one second's worth)",
    ),
    EnvVar(
        "DB_POOL_MIN_SIZE",
        "pool_min_size",
        p.whole_number,
        "connections opened at start-up and kept",
    ),
    EnvVar(
        "DB_POOL_MAX_SIZE", "pool_max_size", p.positive_int, "maximum connections to PostgreSQL"
    ),
    EnvVar(
        "DB_STATEMENT_TIMEOUT_MS",
        "statement_timeout_ms",
        p.positive_int,
        "upper bound for one query; the caller's deadline bounds it further",
    ),
    EnvVar(
        "DB_LOOKUP_CONCURRENCY",
        "lookup_concurrency",
        p.whole_number,
        "UserExists queries running at once; lookups arriving meanwhile share the next query (0 = one query per call)",
    ),
    EnvVar(
        "DB_LOOKUP_WINDOW_MS",
        "lookup_window_ms",
        p.non_negative_float,
        "under load, how long a UserExists lookup may wait to share a query with others (0 = never wait); a quiet server never waits",
    ),
    EnvVar(
        "DB_LOOKUP_TARGET_BATCH",
        "lookup_target_batch",
        p.positive_int,
        "how many lookups a collection window aims to gather: it waits the expected time for that many (at most DB_LOOKUP_WINDOW_MS), and only while more than 2 x DB_LOOKUP_CONCURRENCY x this many calls are in flight",
    ),
    EnvVar(
        "STATE_CACHE_SIZE",
        "state_cache_size",
        p.non_negative_int,
        "user states this process keeps to answer UserExists / BatchUserExists without a query; exact: every change to the users table is announced (LISTEN/NOTIFY) and drops its entry, and the cache is bypassed while that feed is down; 0 = off",
    ),
    EnvVar(
        "STATE_INDEX_MAX_USERS",
        "state_index_max_users",
        p.non_negative_int,
        "this process reads every user's state at start-up (17 bytes per user) and answers every existing user from memory (an unknown id is confirmed by a query: never a false `NOT_FOUND`), kept exact by the same change feed; not loaded if the table holds more users than this; 0 = off",
    ),
    EnvVar(
        "DB_STALL_TIMEOUT_MS",
        "stall_timeout_ms",
        p.non_negative_int,
        "queries waiting and none answered for this long: new calls are UNAVAILABLE at once and health NOT_SERVING until the database answers (a tenth of it decides whether a hit concurrency limit is the database's fault or the caller's); 0 = off",
    ),
    EnvVar(
        "DB_CONNECT_TIMEOUT_S",
        "connect_timeout_s",
        p.positive_float,
        "timeout for opening one database connection",
    ),
    EnvVar(
        "PII_RETENTION_S",
        "pii_retention_s",
        p.non_negative_float,
        "how long a deleted user's personal data (username, display name, email) is kept before it is erased; 0 = erased in DeleteUser's own transaction",
    ),
    EnvVar(
        "PII_ERASURE_INTERVAL_S",
        "pii_erasure_interval_s",
        p.positive_float,
        "how often `serve` erases the personal data that is due (and data of users deleted before erasure existed)",
    ),
    EnvVar(
        "HEALTH_CHECK_INTERVAL_S",
        "health_interval_s",
        p.positive_float,
        "how often the database is pinged for the gRPC health status",
    ),
    EnvVar(
        "SHUTDOWN_GRACE_S",
        "shutdown_grace_s",
        p.non_negative_float,
        "on SIGTERM, how long in-flight calls may finish",
    ),
    EnvVar("LOG_LEVEL", "log_level", p.log_level, "DEBUG, INFO, WARNING or ERROR"),
    EnvVar("LOG_FORMAT", "log_format", p.log_format, "json (one object per line) or text"),
    EnvVar(
        "METRICS_LISTEN",
        "metrics_listen",
        p.optional_address,
        "host:port of the Prometheus /metrics HTTP endpoint of `serve` and `relay` (unset = no endpoint; plaintext, keep it internal)",
    ),
    EnvVar(
        "KAFKA_BOOTSTRAP_SERVERS",
        "kafka_bootstrap_servers",
        p.bootstrap_servers,
        "comma-separated host:port of the Kafka brokers the outbox relay publishes to; required unless RELAY_ENABLED=false",
    ),
    EnvVar("KAFKA_TOPIC", "kafka_topic", p.topic, "topic of the user_deleted events"),
    EnvVar(
        "KAFKA_USER_CREATED_TOPIC",
        "kafka_user_created_topic",
        p.optional_topic,
        "topic of the user_created events; set, every CreateUser writes one (and user events take positions) for the clients' local replicas (docs/events.md); the topic must exist; empty = off",
    ),
    EnvVar(
        "KAFKA_ENABLE_IDEMPOTENCE",
        "kafka_enable_idempotence",
        p.boolean,
        "idempotent producer (turn on against real Kafka; the embedded broker does not support it)",
    ),
    EnvVar(
        "KAFKA_REQUEST_TIMEOUT_S",
        "kafka_request_timeout_s",
        p.positive_float,
        "how long one publish may wait for the brokers' acknowledgement before the relay retries",
    ),
    EnvVar(
        "RELAY_ENABLED",
        "relay_enabled",
        p.boolean,
        "run the outbox relay inside `auth-service serve` (false when `auth-service relay` runs separately)",
    ),
    EnvVar(
        "RELAY_POLL_INTERVAL_S",
        "relay_poll_interval_s",
        p.positive_float,
        "how often the relay looks for unpublished events when no NOTIFY woke it",
    ),
    EnvVar(
        "RELAY_BATCH_SIZE",
        "relay_batch_size",
        p.positive_int,
        "outbox rows claimed and published per batch",
    ),
    EnvVar(
        "RELAY_MAX_BACKOFF_S",
        "relay_max_backoff_s",
        p.positive_float,
        "upper bound of the retry delay while Kafka or PostgreSQL is down",
    ),
    EnvVar(
        "OUTBOX_RETENTION_S",
        "outbox_retention_s",
        p.positive_float,
        "published outbox rows are deleted after this many seconds (unpublished rows never)",
    ),
    # Tracing: OpenTelemetry's standard variables (docs/tracing.md). Validated here;
    # the SDK reads them itself, with the rest of its OTEL_* variables.
    EnvVar(
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "otel_exporter_otlp_endpoint",
        p.url,
        "base URL of an OTLP/HTTP receiver (spans go to its /v1/traces); setting it, or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, turns tracing on (docs/tracing.md)",
    ),
    EnvVar(
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "otel_exporter_otlp_traces_endpoint",
        p.url,
        "full URL spans are posted to (instead of OTEL_EXPORTER_OTLP_ENDPOINT/v1/traces)",
    ),
    EnvVar(
        "OTEL_EXPORTER_OTLP_PROTOCOL",
        "otel_exporter_otlp_protocol",
        p.otlp_protocol,
        "http/protobuf, the only protocol the image exports with",
    ),
    EnvVar(
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        "otel_exporter_otlp_traces_protocol",
        p.otlp_protocol,
        "as OTEL_EXPORTER_OTLP_PROTOCOL, for spans",
    ),
    EnvVar(
        "OTEL_TRACES_EXPORTER",
        "otel_traces_exporter",
        p.traces_exporter,
        "otlp, or none to turn tracing off while an endpoint is set",
    ),
    EnvVar(
        "OTEL_SDK_DISABLED",
        "otel_sdk_disabled",
        p.boolean,
        "true turns tracing off whatever else is set",
    ),
    EnvVar(
        "OTEL_SERVICE_NAME",
        "otel_service_name",
        p.non_empty,
        "service.name of the spans (default auth-service, unless OTEL_RESOURCE_ATTRIBUTES names one)",
    ),
    EnvVar(
        "OTEL_TRACES_SAMPLER",
        "otel_traces_sampler",
        p.sampler,
        f"which calls are traced: {', '.join(SAMPLERS)}; parentbased_* follow the caller's decision (its traceparent)",
    ),
    EnvVar(
        "OTEL_TRACES_SAMPLER_ARG",
        "otel_traces_sampler_arg",
        p.ratio,
        "the ratio of traceidratio and parentbased_traceidratio, 0 to 1 (default 1)",
    ),
)
