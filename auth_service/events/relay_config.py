"""What a relay is configured with: `RelayConfig`, built from `Settings` by
`from_settings` (tests and benchmarks override single fields).

Topics: `user_deleted` events go to KAFKA_TOPIC; `user_created` events, when on,
to `user_created_topic` (docs/events.md). Off, CreateUser writes no event and the
relay publishes none."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from auth_client.contract import USER_CREATED_TYPE, USER_DELETED_TYPE
from auth_service.events.publisher import ProducerConfig

if TYPE_CHECKING:
    from auth_service.config import Settings


@dataclass(frozen=True)
class RelayConfig:
    database_url: str = field(repr=False)
    producer: ProducerConfig
    batch_size: int = 100
    poll_interval_s: float = 1.0
    max_backoff_s: float = 30.0
    retention_s: float = 7 * 24 * 3600.0
    prune_interval_s: float = 600.0
    lag_interval_s: float = 5.0
    lag_warn_s: float = 60.0
    listen_check_interval_s: float = 10.0
    connect_timeout_s: float = 5.0
    close_timeout_s: float = 5.0

    @classmethod
    def from_settings(
        cls, settings: Settings, *, user_created_topic: str | None = None, **overrides: Any
    ) -> RelayConfig:
        """`user_created_topic`: where `user_created` events go (default
        KAFKA_USER_CREATED_TOPIC; None: they are off and none are published)."""
        if not settings.kafka_bootstrap_servers:
            raise ValueError("the relay needs KAFKA_BOOTSTRAP_SERVERS")
        user_created_topic = user_created_topic or settings.kafka_user_created_topic
        topics = {USER_DELETED_TYPE: settings.kafka_topic}
        if user_created_topic:
            topics[USER_CREATED_TYPE] = user_created_topic
        config = cls(
            database_url=settings.database_url,
            producer=ProducerConfig(
                bootstrap_servers=settings.kafka_bootstrap_servers,
                topics=topics,
                enable_idempotence=settings.kafka_enable_idempotence,
                request_timeout_s=settings.kafka_request_timeout_s,
            ),
            batch_size=settings.relay_batch_size,
            poll_interval_s=settings.relay_poll_interval_s,
            max_backoff_s=settings.relay_max_backoff_s,
            retention_s=settings.outbox_retention_s,
            connect_timeout_s=settings.connect_timeout_s,
        )
        return replace(config, **overrides)
