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
# golang-migrate's CLI with its PostgreSQL driver (drivers are chosen by build tags).
GOLANG_MIGRATE = ("github.com/golang-migrate/migrate/v4/cmd/migrate", "v4.20.1", ("postgres",))


def _bin_dir(version: str, tags: tuple[str, ...] = ()) -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "auth-service" / "go-bin" / "-".join((version, *sorted(tags)))


def go_binary(module: str, version: str, tags: tuple[str, ...] = ()) -> Path:
    """The binary of `module` at `version` built with the build `tags`, built on
    first use (a minute or two) into a directory of its own per version and tags."""
    name = module.rstrip("/").split("/")[-1]
    target = _bin_dir(version, tags) / name
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
    flags = ["-tags", ",".join(sorted(tags))] if tags else []
    done = subprocess.run(
        [go, "install", *flags, f"{module}@{version}"],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    if done.returncode != 0 or not target.exists():
        _missing(
            name,
            RuntimeError(
                f"go install {' '.join(flags)} {module}@{version} failed: {done.stderr[-1500:]}"
            ),
        )
    return target
