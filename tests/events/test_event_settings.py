"""Kafka / relay settings and the public names of auth_client.events."""

from __future__ import annotations

import pytest

import auth_client.events
from auth_client.backoff import Backoff
from auth_service.config import ConfigError, Settings
from auth_service.events.relay_config import RelayConfig

BASE = {"DATABASE_URL": "postgresql://u@db:5432/auth"}


def test_kafka_is_required_unless_the_relay_is_off() -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env(BASE)
    assert "KAFKA_BOOTSTRAP_SERVERS" in info.value.problems
    settings = Settings.from_env({**BASE, "RELAY_ENABLED": "false"})
    assert settings.relay_enabled is False
    assert settings.kafka_bootstrap_servers is None


def test_kafka_and_relay_settings_from_the_environment() -> None:
    settings = Settings.from_env(
        {
            **BASE,
            "KAFKA_BOOTSTRAP_SERVERS": "k1:9092, k2:9092",
            "KAFKA_TOPIC": "platform.user_deleted",
            "KAFKA_ENABLE_IDEMPOTENCE": "true",
            "RELAY_BATCH_SIZE": "50",
            "RELAY_POLL_INTERVAL_S": "2.5",
            "OUTBOX_RETENTION_S": "3600",
        }
    )
    config = RelayConfig.from_settings(settings)
    assert config.producer.bootstrap_servers == "k1:9092,k2:9092"
    assert config.producer.topics == {"auth.v1.UserDeleted": "platform.user_deleted"}
    assert config.producer.enable_idempotence is True
    assert (config.batch_size, config.poll_interval_s, config.retention_s) == (50, 2.5, 3600.0)


def test_defaults_match_the_contract() -> None:
    settings = Settings.from_env({**BASE, "KAFKA_BOOTSTRAP_SERVERS": "k:9092"})
    assert settings.kafka_topic == "user_deleted"
    assert settings.kafka_enable_idempotence is False  # the embedded broker lacks it
    assert settings.relay_enabled is True


def test_bad_kafka_values_are_all_reported() -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env(
            {
                **BASE,
                "KAFKA_BOOTSTRAP_SERVERS": "no-port",
                "KAFKA_TOPIC": "bad topic!",
                "RELAY_BATCH_SIZE": "0",
            }
        )
    assert {"KAFKA_BOOTSTRAP_SERVERS", "KAFKA_TOPIC", "RELAY_BATCH_SIZE"} <= set(
        info.value.problems
    )


def test_backoff_grows_is_capped_and_jittered() -> None:
    backoff = Backoff(0.1, 2.0)
    delays = [backoff.next() for _ in range(10)]
    assert 0.05 <= delays[0] <= 0.1
    assert all(0.0 < d <= 2.0 for d in delays)
    assert all(d >= 1.0 for d in delays[6:])  # capped at 2.0, never below half of it
    backoff.reset()
    assert backoff.next() <= 0.1


def test_events_public_names() -> None:
    assert auth_client.events.UserDeletedConsumer.__module__ == "auth_client._consumer"
    for name in auth_client.events.__all__:
        assert hasattr(auth_client.events, name), name
    assert auth_client.events.DEFAULT_TOPIC == "user_deleted"
    assert auth_client.events.DEFAULT_DLQ_TOPIC == "user_deleted.dlq"
