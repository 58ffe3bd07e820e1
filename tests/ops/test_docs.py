"""docs/operations.md stays true: it names every variable and every server metric,
its `auth-service` commands parse, and the tests it cites exist."""

from __future__ import annotations

import re
import shlex

from prometheus_client import REGISTRY

import auth_service.api.server  # noqa: F401 - registers the relay's and the server's metrics
from auth_service.cli import build_parser
from auth_service.config import ENV_VARS
from tests.ops.support import REPO

GUIDE = (REPO / "docs" / "operations.md").read_text()


def test_every_variable_is_named() -> None:
    missing = [var.name for var in ENV_VARS if f"`{var.name}`" not in GUIDE]
    assert missing == []


def test_every_server_metric_is_named() -> None:
    names = set()
    for collector in list(REGISTRY._collector_to_names):  # read-only walk
        for family in collector.collect():
            if family.name.startswith(("grpc_server_", "db_pool_", "outbox_")):
                suffix = "_total" if family.type == "counter" else ""
                names.add(family.name + suffix)
    assert names >= {
        "grpc_server_started_total",
        "grpc_server_handled_total",
        "grpc_server_handling_seconds",
        "db_pool_in_use",
        "outbox_unpublished_rows",
    }
    missing = sorted(name for name in names if f"`{name}`" not in GUIDE)
    assert missing == []


def test_auth_service_commands_parse() -> None:
    """Every `auth-service ...` (also after `docker run IMAGE` or `docker compose
    exec SERVICE`) in the guide's shell blocks is a command the CLI accepts."""
    parser = build_parser()
    subcommands = {"serve", "relay", "migrate", "health", "users", "dev"}
    parsed = []
    for block in re.findall(r"```sh\n(.*?)```", GUIDE, flags=re.DOTALL):
        for line in re.sub(r"\\\n\s*", " ", block).splitlines():  # continuations joined
            words = shlex.split(line.split(" #", 1)[0].replace("$(date +%F)", "x"))
            starts = [
                i
                for i, w in enumerate(words)
                if w in {"auth-service", ".venv/bin/auth-service"} or w.startswith("auth-service:")
            ]
            if (
                not starts
                or starts[-1] + 1 >= len(words)
                or words[starts[-1] + 1] not in subcommands
            ):
                continue
            args = words[starts[-1] + 1 :]
            parser.parse_args([a.replace("<id>", "0" * 8) for a in args])  # SystemExit = failure
            parsed.append(args[0])
    assert {"serve", "relay", "migrate", "health", "users"} <= set(parsed)


def test_cited_tests_exist() -> None:
    cited = re.findall(r"`(tests/ops/\w+\.py)(?:::(\w+))?`", GUIDE)
    assert cited
    for path, function in cited:
        source = (REPO / path).read_text()
        if function:
            assert f"def {function}(" in source, f"{path}::{function}"


def test_readme_links_the_guide() -> None:
    readme = (REPO / "README.md").read_text()
    assert "docs/operations.md" in readme
