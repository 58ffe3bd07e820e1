"""Configuration of an `AuthClient`: frozen dataclasses and two policy enums.

Everything is passed in by the caller; the library never reads the environment.
"""

from __future__ import annotations

import enum
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from auth_client.contract import (
    DEFAULT_CREATED_TOPIC,
    DEFAULT_TOPIC,
    MAX_BATCH_IDS,
    MAX_EXPORT_PAGE_SIZE,
)


class FallbackPolicy(enum.Enum):
    """What a lookup answers when auth-service cannot (breaker open, deadline,
    unavailable)."""

    FAIL_CLOSED = "fail_closed"
    """Raise `ServiceUnavailableError` (or its subclasses). The default."""
    SERVE_STALE = "serve_stale"
    """Answer from an expired cache entry no older than `CacheConfig.max_stale`;
    without one, fail closed."""
    FAIL_OPEN = "fail_open"
    """Answer "exists" and report the ids to the `on_unverified` hook."""


class RolloutMode(enum.Enum):
    """How much the existence checks are trusted while replacing a foreign key."""

    ENFORCE = "enforce"
    """Answers are real; `require_user` raises for missing users. The default."""
    SHADOW = "shadow"
    """Checks run in the background; callers always get "exists" at once.
    Disagreements and failures are logged and counted."""
    OFF = "off"
    """No calls at all; every id "exists"."""


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


def _finite_positive(value: float) -> bool:
    return math.isfinite(value) and value > 0


@dataclass(frozen=True, slots=True)
class CacheConfig:
    """The per-client LRU cache of existence answers.

    `positive_ttl` bounds how long a deleted user can still be seen as existing
    (unless `mark_deleted` is called from the `user_deleted` consumer);
    `negative_ttl` bounds how long a just-created user can be seen as missing.
    A "deleted" answer is final (ids are never reused) and is kept for
    `positive_ttl`. A TTL of 0 disables caching of that kind of answer.
    """

    max_size: int = 100_000
    positive_ttl: float = 30.0
    negative_ttl: float = 2.0
    max_stale: float = 300.0
    """How long past expiry an entry may still be served under SERVE_STALE."""

    def __post_init__(self) -> None:
        _check(self.max_size >= 0, "max_size must not be negative")
        for name in ("positive_ttl", "negative_ttl", "max_stale"):
            value = getattr(self, name)
            _check(math.isfinite(value) and value >= 0, f"{name} must be a non-negative number")


@dataclass(frozen=True, slots=True)
class BreakerConfig:
    """The circuit breaker: opens after `fail_max` consecutive transport failures,
    lets one probe call through after `reset_timeout` seconds."""

    fail_max: int = 5
    reset_timeout: float = 10.0
    enabled: bool = True

    def __post_init__(self) -> None:
        _check(self.fail_max >= 1, "fail_max must be at least 1")
        _check(_finite_positive(self.reset_timeout), "reset_timeout must be positive")


@dataclass(frozen=True, slots=True)
class BatchConfig:
    """Merging of concurrent lookups of different ids into one BatchUserExists.

    When no lookup is in flight, a new one goes out on the next event-loop turn
    (so callers that arrive together share an RPC without waiting). While one is
    in flight, new ids collect until it returns, and for at most `window` seconds:
    a round trip's worth of misses goes out as one RPC, and no id waits longer
    than `window` when an RPC is slow.
    """

    window: float = 0.005
    max_ids: int = MAX_BATCH_IDS

    def __post_init__(self) -> None:
        _check(math.isfinite(self.window) and self.window >= 0, "window must be >= 0")
        _check(1 <= self.max_ids <= MAX_BATCH_IDS, f"max_ids must be 1..{MAX_BATCH_IDS}")


@dataclass(frozen=True, slots=True)
class RetryConfig:
    """gRPC's own retry policy for UNAVAILABLE, applied to the read methods only
    (all of AuthService is idempotent). Retries stay within the call deadline."""

    max_attempts: int = 3
    initial_backoff: float = 0.05
    max_backoff: float = 0.5
    backoff_multiplier: float = 2.0

    def __post_init__(self) -> None:
        _check(2 <= self.max_attempts <= 5, "max_attempts must be 2..5 (gRPC caps it at 5)")
        _check(_finite_positive(self.initial_backoff), "initial_backoff must be positive")
        _check(_finite_positive(self.max_backoff), "max_backoff must be positive")
        _check(self.backoff_multiplier > 0, "backoff_multiplier must be positive")


@dataclass(frozen=True, slots=True)
class ChannelConfig:
    """Options of a channel the client builds from a target."""

    keepalive_time: float = 30.0
    keepalive_timeout: float = 10.0
    reconnect_backoff_initial: float = 0.1
    reconnect_backoff_max: float = 5.0
    load_balancing: str = "round_robin"
    retry: RetryConfig = field(default_factory=RetryConfig)
    extra_options: tuple[tuple[str, str | int], ...] = ()
    max_rpcs_in_flight: int = 100
    """RPCs this client has on its channel at once; more wait (within their
    deadline) for a free slot. A server takes a bounded number of concurrent
    streams per connection and refuses the rest; this keeps a burst of thousands
    of lookups from being refused."""

    def __post_init__(self) -> None:
        _check(self.max_rpcs_in_flight >= 1, "max_rpcs_in_flight must be at least 1")
        for name in (
            "keepalive_time",
            "keepalive_timeout",
            "reconnect_backoff_initial",
            "reconnect_backoff_max",
        ):
            _check(_finite_positive(getattr(self, name)), f"{name} must be positive")

    def service_config(self) -> str:
        """Service config JSON: load balancing plus the retry policy."""
        retry = self.retry
        policy = {
            "maxAttempts": retry.max_attempts,
            "initialBackoff": f"{retry.initial_backoff:.3f}s",
            "maxBackoff": f"{retry.max_backoff:.3f}s",
            "backoffMultiplier": retry.backoff_multiplier,
            "retryableStatusCodes": ["UNAVAILABLE"],
        }
        return json.dumps(
            {
                "loadBalancingConfig": [{self.load_balancing: {}}],
                "methodConfig": [
                    {
                        "name": [
                            {"service": "auth.v1.AuthService", "method": method}
                            for method in ("UserExists", "GetUser", "BatchUserExists")
                        ],
                        "retryPolicy": policy,
                    }
                ],
            }
        )

    def options(self) -> list[tuple[str, str | int]]:
        ms = 1000
        return [
            ("grpc.service_config", self.service_config()),
            ("grpc.enable_retries", 1),
            ("grpc.keepalive_time_ms", int(self.keepalive_time * ms)),
            ("grpc.keepalive_timeout_ms", int(self.keepalive_timeout * ms)),
            ("grpc.http2.max_pings_without_data", 0),
            ("grpc.initial_reconnect_backoff_ms", int(self.reconnect_backoff_initial * ms)),
            ("grpc.max_reconnect_backoff_ms", int(self.reconnect_backoff_max * ms)),
            *self.extra_options,
        ]


def _read(value: bytes | str | Path | None) -> bytes | None:
    if value is None or isinstance(value, bytes):
        return value
    return Path(value).read_bytes()


@dataclass(frozen=True, slots=True)
class TLSConfig:
    """TLS for a channel built from a target. Each field is PEM bytes or a path.

    `root_certificates` verifies the server (None: the system roots);
    `certificate_chain` + `private_key` authenticate this client (mTLS);
    `server_name` overrides the name checked in the server certificate.
    """

    root_certificates: bytes | str | Path | None = None
    certificate_chain: bytes | str | Path | None = None
    private_key: bytes | str | Path | None = field(default=None, repr=False)
    server_name: str | None = None

    def __post_init__(self) -> None:
        _check(
            (self.certificate_chain is None) == (self.private_key is None),
            "certificate_chain and private_key go together",
        )

    def load(self) -> tuple[bytes | None, bytes | None, bytes | None]:
        """(root certificates, private key, certificate chain) as PEM bytes."""
        return (
            _read(self.root_certificates),
            _read(self.private_key),
            _read(self.certificate_chain),
        )


@dataclass(frozen=True, slots=True)
class ReplicaConfig:
    """A local replica of every user's state (`AuthClient(..., replica=...)`), kept
    by the `user_created` and `user_deleted` events (extra `events`: aiokafka).

    The client loads a snapshot (ExportUserStates) when it opens and follows the
    events from there; it then answers ACTIVE and DELETED from memory, without an
    RPC, and asks auth-service about every id the replica does not know (never
    NOT_FOUND from memory). docs/client.md says when to use one and how it fails.

    - `bootstrap_servers`: the Kafka brokers auth-service's relay publishes to;
      `created_topic`, `deleted_topic` its topics (KAFKA_TOPIC on the server).
    - `max_users`: a load that finds more users stops, says so once, and the client
      answers through RPCs (no replica).
    - `load_timeout`: how long one load (the broker's offsets and the export) may
      take; the first load, when the client opens, fails with `ReplicaLoadError`
      after it.
    - `gap_timeout`: how long an event position may be missing (a later one
      arrived) before the replica stops answering and reloads.
    - `stale_after`: how long the brokers may go unanswered before the replica stops
      answering ACTIVE (which may be at most about this old then) and reloads,
      retrying until they answer. They are asked for their end offsets every
      `check_interval`.
    - `max_backoff`: the longest wait between failed reloads.
    - `page_size`: users per export page (0: the server's default).
    - `consumer_options`: passed to aiokafka's consumer (security settings, ...).
    """

    bootstrap_servers: str | tuple[str, ...]
    created_topic: str = DEFAULT_CREATED_TOPIC
    deleted_topic: str = DEFAULT_TOPIC
    max_users: int = 10_000_000
    load_timeout: float = 120.0
    gap_timeout: float = 5.0
    stale_after: float = 3.0
    check_interval: float = 0.5
    max_backoff: float = 30.0
    page_size: int = 0
    consumer_options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check(bool(self.bootstrap_servers), "bootstrap_servers must name a broker")
        _check(bool(self.created_topic and self.deleted_topic), "topics must be named")
        _check(self.created_topic != self.deleted_topic, "two different topics are needed")
        _check(self.max_users >= 1, "max_users must be at least 1")
        for name in ("load_timeout", "gap_timeout", "stale_after", "check_interval", "max_backoff"):
            _check(_finite_positive(getattr(self, name)), f"{name} must be positive")
        _check(self.check_interval < self.stale_after, "check_interval must be below stale_after")
        _check(
            0 <= self.page_size <= MAX_EXPORT_PAGE_SIZE,
            f"page_size must be 0..{MAX_EXPORT_PAGE_SIZE}",
        )
