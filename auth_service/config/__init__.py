"""config: the settings of a server process, read from the environment in this one
module and validated at start-up. `variables` lists the variables (names, parsers,
help), `parsers` turns their text into values, `tokens` parses caller tokens.

`Settings.from_env()` collects every problem and raises one `ConfigError` that names
each bad variable, so an operator fixes a deployment in one round. Nothing else in
the service reads `os.environ` (nor does the auth_client library).

May import: `auth_service.addresses` and `auth_client.contract` only.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from auth_service.config.tokens import TokenEntry
from auth_service.config.variables import ENV_VARS, MIN_REQUEST_BYTES, EnvVar

__all__ = [
    "CLI_ENV_VARS",
    "ENV_VARS",
    "MIN_REQUEST_BYTES",
    "ConfigError",
    "EnvVar",
    "Settings",
    "cli_default",
    "otel_from_env",
]


class ConfigError(ValueError):
    """One or more configuration values are missing or invalid."""

    def __init__(self, problems: Mapping[str, str]) -> None:
        self.problems = dict(problems)
        lines = "\n".join(f"  {key}: {why}" for key, why in sorted(self.problems.items()))
        super().__init__(f"invalid configuration ({len(self.problems)} problem(s)):\n{lines}")


@dataclass(frozen=True)
class Settings:
    """Validated configuration of one auth-service process."""

    database_url: str = field(repr=False)
    database_read_urls: tuple[str, ...] = field(default=(), repr=False)
    read_max_lag_ms: int = 1000
    listen: str = "127.0.0.1:50051"
    max_connection_age_s: float = 300.0
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
    stall_timeout_ms: int = 500
    pii_retention_s: float = 0.0
    pii_erasure_interval_s: float = 60.0
    lookup_concurrency: int = 2
    lookup_window_ms: float = 2.0
    lookup_target_batch: int = 8
    state_cache_size: int = 200_000
    state_index_max_users: int = 5_000_000
    # Not from the environment: set for the processes of `serve --workers N`.
    reuse_port: bool = False
    health_interval_s: float = 1.0
    shutdown_grace_s: float = 10.0
    log_level: str = "INFO"
    log_format: str = "json"
    metrics_listen: str | None = None
    kafka_bootstrap_servers: str | None = None
    kafka_topic: str = "user_deleted"
    kafka_user_created_topic: str | None = None
    kafka_enable_idempotence: bool = False
    kafka_request_timeout_s: float = 10.0
    relay_enabled: bool = True
    relay_poll_interval_s: float = 1.0
    relay_batch_size: int = 100
    relay_max_backoff_s: float = 30.0
    outbox_retention_s: float = 7 * 24 * 3600.0
    # Tracing (OpenTelemetry's variables; the SDK reads them itself): `tracing`.
    otel_exporter_otlp_endpoint: str | None = field(default=None, repr=False)
    otel_exporter_otlp_traces_endpoint: str | None = field(default=None, repr=False)
    otel_exporter_otlp_protocol: str = "http/protobuf"
    otel_exporter_otlp_traces_protocol: str | None = None
    otel_traces_exporter: str = "otlp"
    otel_sdk_disabled: bool = False
    otel_service_name: str | None = None
    otel_traces_sampler: str = "parentbased_always_on"
    otel_traces_sampler_arg: float | None = None
    # Not from the environment: only `auth-service dev` (and test fixtures) turn it
    # on; AuthService then answers callers without a known token as `anonymous`.
    allow_unauthenticated_reads: bool = False

    def __post_init__(self) -> None:
        problems = self._cross_check()
        if problems:
            raise ConfigError(problems)

    def _cross_check(self) -> dict[str, str]:
        return {**self._check_database(), **self._check_tls(), **self._check_limits()}

    def _check_database(self) -> dict[str, str]:
        problems: dict[str, str] = {}
        if self.pool_min_size < 0:
            problems["DB_POOL_MIN_SIZE"] = "must not be negative"
        elif self.pool_min_size > self.pool_max_size:
            problems["DB_POOL_MIN_SIZE"] = "must not exceed DB_POOL_MAX_SIZE"
        if not 0 <= self.lookup_concurrency <= self.pool_max_size:
            problems["DB_LOOKUP_CONCURRENCY"] = "must be from 0 to DB_POOL_MAX_SIZE"
        if self.state_cache_size < 0:
            problems["STATE_CACHE_SIZE"] = "must not be negative"
        if self.state_index_max_users < 0:
            problems["STATE_INDEX_MAX_USERS"] = "must not be negative"
        return problems

    def _check_tls(self) -> dict[str, str]:
        problems: dict[str, str] = {}
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            missing = "TLS_KEY_FILE" if self.tls_cert_file else "TLS_CERT_FILE"
            problems[missing] = "TLS_CERT_FILE and TLS_KEY_FILE must be set together"
        if self.tls_client_ca_file and not self.tls_cert_file:
            problems["TLS_CLIENT_CA_FILE"] = "mTLS needs TLS_CERT_FILE and TLS_KEY_FILE too"
        return problems

    def _check_limits(self) -> dict[str, str]:
        problems: dict[str, str] = {}
        if self.max_request_bytes < MIN_REQUEST_BYTES:
            problems["MAX_REQUEST_BYTES"] = (
                f"must be at least {MIN_REQUEST_BYTES} so a 1000-id batch fits"
            )
        per_caller = self.max_concurrent_rpcs_per_caller
        if per_caller and self.max_concurrent_rpcs and per_caller > self.max_concurrent_rpcs:
            problems["MAX_CONCURRENT_RPCS_PER_CALLER"] = "must not exceed MAX_CONCURRENT_RPCS"
        if self.rate_limit_burst and not self.rate_limit_rps:
            problems["RATE_LIMIT_BURST"] = "has no effect without RATE_LIMIT_RPS"
        if self.otel_traces_sampler_arg is not None and not self.otel_traces_sampler.endswith(
            "traceidratio"
        ):
            problems["OTEL_TRACES_SAMPLER_ARG"] = (
                "has no effect without OTEL_TRACES_SAMPLER=traceidratio or parentbased_traceidratio"
            )
        return problems

    @property
    def tracing(self) -> bool:
        """Whether this process exports traces: an OTLP endpoint is set, and neither
        OTEL_SDK_DISABLED nor OTEL_TRACES_EXPORTER=none turns it off."""
        return (
            not self.otel_sdk_disabled
            and self.otel_traces_exporter == "otlp"
            and bool(self.otel_exporter_otlp_endpoint or self.otel_exporter_otlp_traces_endpoint)
        )

    @property
    def per_caller_concurrency(self) -> int:
        """MAX_CONCURRENT_RPCS_PER_CALLER, defaulting to half the global bound."""
        if self.max_concurrent_rpcs_per_caller is not None:
            return self.max_concurrent_rpcs_per_caller
        return max(1, self.max_concurrent_rpcs // 2) if self.max_concurrent_rpcs else 0

    @classmethod
    def from_env(
        cls, env: Mapping[str, str] | None = None, *, command: str = "serve", **overrides: Any
    ) -> Settings:
        """Build settings from `env` (default: the process environment) for
        `auth-service COMMAND` (its problems are named for that command).

        `overrides` (attribute names) win over the environment, e.g. CLI flags.
        """
        source = os.environ if env is None else env
        values, problems = _parse_env(source, overrides)
        values.update(overrides)
        # Settings built in code (tests, `auth-service dev`) may leave Kafka out and
        # get no relay; a deployment must say where to publish or turn the relay off.
        if values.get("relay_enabled", True) and not values.get("kafka_bootstrap_servers"):
            problems.setdefault(
                "KAFKA_BOOTSTRAP_SERVERS",
                "is required by `auth-service relay`"
                if command == "relay"
                else "is required unless RELAY_ENABLED=false",
            )
        if problems:
            raise ConfigError({**problems, **cls._cross_problems(values, problems)})
        try:
            return cls(**values)
        except ConfigError:
            raise
        except TypeError as exc:  # pragma: no cover - programming error in overrides
            raise ConfigError({"<overrides>": str(exc)}) from exc

    @classmethod
    def _cross_problems(cls, values: dict[str, Any], known: Mapping[str, str]) -> dict[str, str]:
        """The cross-field rules' problems not in `known`, judged with defaults
        standing in for the bad values, so one error names every problem."""
        probe = {"database_url": "postgresql://placeholder/db", **values}
        try:
            cls(**probe)
        except ConfigError as exc:
            return {key: why for key, why in exc.problems.items() if key not in known}
        except TypeError:  # pragma: no cover - programming error in overrides
            pass
        return {}

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)


def otel_from_env(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The tracing settings (`OTEL_*`) that `env` (default: the process environment)
    sets, as Settings attributes: `auth-service dev` takes these and no other
    variable from the environment. ConfigError names every bad one."""
    source = os.environ if env is None else env
    otel = [var for var in ENV_VARS if var.name.startswith("OTEL_")]
    values, problems = _parse_env(source, {}, otel)
    if problems:
        raise ConfigError(problems)
    return values


def _parse_env(
    source: Mapping[str, str],
    overrides: Mapping[str, Any],
    variables: Iterable[EnvVar] = ENV_VARS,
) -> tuple[dict[str, Any], dict[str, str]]:
    """The values of each of `variables` that `source` sets (those `overrides`
    replace left out), and the problem of each that is missing or does not parse."""
    values: dict[str, Any] = {}
    problems: dict[str, str] = {}
    for var in variables:
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
    return values, problems


def cli_default(name: str, default: str | None = None) -> str | None:
    """Environment fallback for a command-line flag (e.g. AUTH_SERVICE_TARGET)."""
    value = os.environ.get(name)
    return value or default


CLI_ENV_VARS: dict[str, str] = {
    "AUTH_SERVICE_TARGET": "target of `auth-service users ...` (default 127.0.0.1:50051)",
    "AUTH_SERVICE_TOKEN": "bearer token sent by `auth-service users ...`",
}
