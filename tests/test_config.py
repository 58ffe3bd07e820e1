"""Settings.from_env: validated at start-up, one error naming every bad key."""

from __future__ import annotations

import os
import re
import subprocess
import sys
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


@pytest.mark.parametrize(
    ("name", "raw", "why"),
    [
        ("DB_POOL_MAX_SIZE", "abc", "must be a whole number, got 'abc'"),
        ("DB_POOL_MIN_SIZE", "1.5", "must be a whole number, got '1.5'"),
        ("DB_LOOKUP_CONCURRENCY", "two", "must be a whole number, got 'two'"),
        ("DB_POOL_MAX_SIZE", "-3", "must be a whole number greater than 0, got '-3'"),
        ("RATE_LIMIT_BURST", "-1", "must be a whole number, 0 or more, got '-1'"),
        ("RATE_LIMIT_RPS", "fast", "must be a number, got 'fast'"),
        ("SHUTDOWN_GRACE_S", "-2", "must be a number, 0 or more, got '-2'"),
        ("HEALTH_CHECK_INTERVAL_S", "0", "must be a number greater than 0, got '0'"),
        ("DB_CONNECT_TIMEOUT_S", "nan", "must be a finite number, got 'nan'"),
        ("ALLOW_INSECURE", "maybe", "must be true or false (or 1/0, yes/no, on/off), got 'maybe'"),
    ],
)
def test_numbers_and_switches_are_refused_in_plain_words(name: str, raw: str, why: str) -> None:
    """#29: `DB_POOL_MAX_SIZE=abc` said `invalid literal for int() with base 10: 'abc'`."""
    with pytest.raises(ConfigError) as info:
        Settings.from_env({**GOOD, name: raw})
    assert info.value.problems[name] == why
    assert f"  {name}: {why}" in str(info.value)


def test_no_variable_answers_junk_with_pythons_own_words() -> None:
    """Whatever a variable's parser, a value it cannot read is explained, not
    reported as Python's exception text (a bare `int` as a parser would be)."""
    python_words = ("invalid literal", "could not convert", "base 10", "object has no")
    for junk in ("abc", "1.5.6", "--", "x" * 80):
        env = {**GOOD, **{var.name: junk for var in ENV_VARS if var.name != "DATABASE_URL"}}
        with pytest.raises(ConfigError) as info:
            Settings.from_env(env)
        for name, why in info.value.problems.items():
            assert not any(words in why for words in python_words), f"{name}: {why}"
            assert len(why) < 200, f"{name}: {why}"


def test_serve_prints_the_problem_in_plain_words() -> None:
    env = {
        **{k: v for k, v in os.environ.items() if k not in {v.name for v in ENV_VARS}},
        **GOOD,
        "DB_POOL_MAX_SIZE": "abc",
    }
    result = subprocess.run(
        [sys.executable, "-m", "auth_service", "serve"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "auth-service: invalid configuration (1 problem(s)):",
        "  DB_POOL_MAX_SIZE: must be a whole number, got 'abc'",
    ]
