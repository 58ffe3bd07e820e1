"""Real tools written in Go that the tests check the service against, built from the
Go module proxy once (`go install MODULE@VERSION`) into a cache the runs share.
Without Go the test is skipped with what to install; under CI=true it fails."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from tests.conftest import _missing

GRPC_HEALTH_PROBE = ("github.com/grpc-ecosystem/grpc-health-probe", "v0.4.63")


def _bin_dir(version: str) -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "auth-service" / "go-bin" / version


def go_binary(module: str, version: str) -> Path:
    """The binary of `module` at `version`, built on first use (a minute or two)."""
    name = module.rstrip("/").split("/")[-1]
    target = _bin_dir(version) / name
    if target.exists():
        return target
    go = shutil.which("go") or (
        "/usr/local/go/bin/go" if Path("/usr/local/go/bin/go").exists() else None
    )
    if go is None:
        _missing(
            name,
            RuntimeError(
                "Go is not installed (https://go.dev/doc/install, or apt-get install golang)"
            ),
        )
    env = {**os.environ, "GOBIN": str(target.parent), "CGO_ENABLED": "0"}
    done = subprocess.run(
        [go, "install", f"{module}@{version}"],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    if done.returncode != 0 or not target.exists():
        _missing(name, RuntimeError(f"go install {module}@{version} failed: {done.stderr[-1500:]}"))
    return target
