"""Settings.from_env: validated at start-up, one error naming every bad key."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from auth_service.config import ENV_VARS, ConfigError, Settings

GOOD = {"DATABASE_URL": "postgresql://u@127.0.0.1:5432/auth", "RELAY_ENABLED": "false"}


def test_defaults_with_only_database_url() -> None:
    s = Settings.from_env(GOOD)
    assert s.listen == "127.0.0.1:50051"
    assert s.admin_tokens == ()


def test_every_bad_key_is_named_in_one_error() -> None:
    env = {
        "DATABASE_URL": "mysql://x",
        "GRPC_LISTEN": "nope",
        "DB_POOL_MAX_SIZE": "-3",
        "DB_STATEMENT_TIMEOUT_MS": "soon",
        "LOG_LEVEL": "LOUD",
        "ADMIN_TOKENS": "short",
    }
    with pytest.raises(ConfigError) as info:
        Settings.from_env(env)
    assert set(info.value.problems) >= set(env)
    for key in env:
        assert key in str(info.value)


def test_missing_database_url_is_named() -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env({})
    assert "DATABASE_URL" in info.value.problems


def test_secrets_are_not_in_repr() -> None:
    s = Settings.from_env(
        {
            **GOOD,
            "DATABASE_URL": "postgresql://u:hunter2-password@db/auth",
            "ADMIN_TOKENS": "tok-abcdefghijklmnop",
        }
    )
    assert "hunter2" not in repr(s)
    assert "tok-abcdefghijklmnop" not in repr(s)


def test_cross_field_problems_are_reported_with_the_others() -> None:
    env = {**GOOD, "LOG_LEVEL": "LOUD", "DB_POOL_MIN_SIZE": "20", "RATE_LIMIT_BURST": "5"}
    with pytest.raises(ConfigError) as info:
        Settings.from_env(env)
    assert {"LOG_LEVEL", "DB_POOL_MIN_SIZE", "RATE_LIMIT_BURST"} <= set(info.value.problems)


def test_pool_min_above_max_is_rejected() -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env({**GOOD, "DB_POOL_MIN_SIZE": "20", "DB_POOL_MAX_SIZE": "5"})
    assert "DB_POOL_MIN_SIZE" in info.value.problems


def test_readme_documents_every_variable() -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    table = readme.split("<!-- config-table:start -->")[1].split("<!-- config-table:end -->")[0]
    documented = set(re.findall(r"^\| `([A-Z0-9_]+)`", table, re.MULTILINE))
    assert documented == {v.name for v in ENV_VARS}, "run: python scripts/config_table.py"


def test_tracing_is_off_unless_an_otlp_endpoint_is_set() -> None:
    assert not Settings.from_env(GOOD).tracing
    endpoint = {**GOOD, "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}
    assert Settings.from_env(endpoint).tracing
    traces = {**GOOD, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "https://otel.example/v1/traces"}
    assert Settings.from_env(traces).tracing
    assert not Settings.from_env({**endpoint, "OTEL_SDK_DISABLED": "true"}).tracing
    assert not Settings.from_env({**endpoint, "OTEL_TRACES_EXPORTER": "none"}).tracing
    assert Settings.from_env(
        {
            **endpoint,
            "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
            "OTEL_TRACES_SAMPLER_ARG": "0.1",
        }
    ).tracing


def test_bad_tracing_variables_are_named_at_start_up() -> None:
    env = {
        **GOOD,
        "OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4317",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
        "OTEL_TRACES_SAMPLER": "sometimes",
        "OTEL_TRACES_EXPORTER": "jaeger",
        "OTEL_SDK_DISABLED": "maybe",
    }
    with pytest.raises(ConfigError) as info:
        Settings.from_env(env)
    assert set(info.value.problems) == set(env) - set(GOOD)
    ratio = {**GOOD, "OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "2"}
    with pytest.raises(ConfigError) as info:
        Settings.from_env(ratio)
    assert set(info.value.problems) == {"OTEL_TRACES_SAMPLER_ARG"}
    pointless = {**GOOD, "OTEL_TRACES_SAMPLER_ARG": "0.5"}  # the default sampler takes none
    with pytest.raises(ConfigError) as info:
        Settings.from_env(pointless)
    assert set(info.value.problems) == {"OTEL_TRACES_SAMPLER_ARG"}
