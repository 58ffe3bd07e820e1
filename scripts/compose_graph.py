"""The dependency rules scripts/check_compose.py applies to Compose's normalized
model: who waits for whom, and on what condition."""

from __future__ import annotations

from typing import Any

from compose_files import as_env

_ONE_SHOT_RESTARTS = {"no", "on-failure"}


class Graph:
    """The services of a normalized model and their `depends_on`."""

    def __init__(self, services: dict[str, dict[str, Any]]) -> None:
        self.services = services

    def deps(self, name: str) -> dict[str, str]:
        """Dependencies and their conditions (Compose writes the short form out long)."""
        raw = self.services[name].get("depends_on") or {}
        return {k: (v or {}).get("condition", "service_started") for k, v in raw.items()}

    def reachable(self, name: str) -> set[str]:
        seen: set[str] = set()
        todo = list(self.deps(name))
        while todo:
            dep = todo.pop()
            if dep not in seen:
                seen.add(dep)
                todo.extend(self.deps(dep))
        return seen

    def restarts(self, name: str) -> bool:
        return self.services[name].get("restart", "no") not in _ONE_SHOT_RESTARTS

    def is_health_target(self, name: str) -> bool:
        return any(self.deps(s).get(name) == "service_healthy" for s in self.services)

    def problems(self, commands: dict[str, list[str]]) -> list[tuple[str, str]]:
        """(service, problem) for the start-up order; `commands`: our services'
        `auth-service` argv."""
        out = [
            (name, f'waits for {dep} to complete, but {dep} restarts (restart: "no")')
            for name in self.services
            for dep, condition in self.deps(name).items()
            if condition == "service_completed_successfully" and self.restarts(dep)
        ]
        kinds: dict[str, list[str]] = {}
        for name, argv in commands.items():
            kinds.setdefault(argv[0], []).append(name)
        return out + self._migrate_problems(kinds) + self._relay_problems(kinds)

    def _migrate_problems(self, kinds: dict[str, list[str]]) -> list[tuple[str, str]]:
        """One `migrate` waits for a healthy database; serve and relay wait for it."""
        migrate = kinds.get("migrate", [])
        out = [] if migrate else [("stack", "no one-shot `migrate` service")]
        out.extend(
            (name, "must wait for a healthy database (service_healthy)")
            for name in migrate
            if "service_healthy" not in self.deps(name).values()
        )
        for name in kinds.get("serve", []) + kinds.get("relay", []):
            waits = [d for d, c in self.deps(name).items() if c == "service_completed_successfully"]
            if not set(waits) & set(migrate):
                out.append(
                    (name, "must wait for `migrate` (condition: service_completed_successfully)")
                )
        return out

    def _relay_problems(self, kinds: dict[str, list[str]]) -> list[tuple[str, str]]:
        """With a separate relay service, `serve` runs none of its own."""
        if not kinds.get("relay"):
            return []
        return [
            (name, "a separate relay service runs: set RELAY_ENABLED=false")
            for name in kinds.get("serve", [])
            if as_env(self.services[name].get("environment")).get("RELAY_ENABLED", "true").lower()
            not in {"false", "0", "no", "off"}
        ]
