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
