"""deploy/kubernetes against the code: the kustomization lists exactly the manifests,
every container runs a command the CLI accepts with variables the configuration
knows, hardened the same way; selectors, ports and names agree between objects; the
grace period, connection age and connection budget are what docs/operations.md
says. And the containers run: serve, relay and migrate started as processes with the
manifests' arguments and environment, probed with the manifests' exact probes.

Schema validation (kubernetes-validate) and rendering (kubectl kustomize) run in
.ci/run through scripts/check_deploy.sh.
"""

from __future__ import annotations

import re
import tomllib
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml

from auth_service.api.tls import insecure_listen_problem
from auth_service.cli import build_parser
from auth_service.config import ENV_VARS, Settings
from auth_service.local.embedded import free_port
from tests.events.support import create_topic
from tests.ops.support import REPO, Service, clean_env, run_cli
from tests.security.pki import Authority

if TYPE_CHECKING:
    from collections.abc import Iterator

BASE = REPO / "deploy" / "kubernetes"
KUSTOMIZATION = yaml.safe_load((BASE / "kustomization.yaml").read_text())
SECRETS = {
    doc["metadata"]["name"]: doc
    for doc in yaml.safe_load_all((BASE / "secret.example.yaml").read_text())
}
KNOWN_VARS = {var.name for var in ENV_VARS}
MOUNT_ROOT = "/etc/auth-service/"


def _objects() -> list[dict[str, Any]]:
    out = []
    for name in KUSTOMIZATION["resources"]:
        out.extend(doc for doc in yaml.safe_load_all((BASE / name).read_text()) if doc)
    return out


OBJECTS = _objects()


def _one(kind: str, name: str) -> dict[str, Any]:
    (found,) = [o for o in OBJECTS if o["kind"] == kind and o["metadata"]["name"] == name]
    return found


API = _one("Deployment", "auth-service")
RELAY = _one("Deployment", "auth-service-relay")
MIGRATE = _one("Job", "auth-service-migrate")
CONFIG = _one("ConfigMap", "auth-service")["data"]
WORKLOADS = (API, RELAY, MIGRATE)


def _container(workload: dict[str, Any]) -> dict[str, Any]:
    (container,) = workload["spec"]["template"]["spec"]["containers"]
    return container


def _pod_labels(workload: dict[str, Any]) -> dict[str, str]:
    labels: dict[str, str] = workload["spec"]["template"]["metadata"]["labels"]
    return labels


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return selector.items() <= labels.items()


def _env(workload: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(name, how it is set) for each variable of the container, ConfigMap included."""
    container = _container(workload)
    for source in container.get("envFrom", []):
        assert source["configMapRef"]["name"] == "auth-service"
        for name, value in CONFIG.items():
            yield name, {"value": value}
    for entry in container.get("env", []):
        yield entry["name"], entry


def test_kustomization_lists_exactly_the_manifests() -> None:
    present = {p.name for p in BASE.glob("*.yaml")} - {"kustomization.yaml"}
    examples = {name for name in present if name.endswith(".example.yaml")}
    assert examples == {"secret.example.yaml"}
    listed = KUSTOMIZATION["resources"]
    assert len(listed) == len(set(listed))
    assert set(listed) == present - examples
    # A placeholder admin token must never be deployed: no Secret is a resource.
    assert not [o for o in OBJECTS if o["kind"] == "Secret"]


def test_the_image_is_this_release() -> None:
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert KUSTOMIZATION["images"] == [{"name": "auth-service", "newTag": version}]
    for workload in WORKLOADS:
        assert _container(workload)["image"] == "auth-service"


def test_every_pod_is_hardened_and_bounded() -> None:
    for workload in WORKLOADS:
        pod = workload["spec"]["template"]["spec"]
        name = workload["metadata"]["name"]
        assert pod["automountServiceAccountToken"] is False, name
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["runAsUser"] == 10001, name  # the Dockerfile's USER
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
        container = _container(workload)
        context = container["securityContext"]
        assert context["runAsNonRoot"] is True, name
        assert context["runAsUser"] == 10001, name
        assert context["allowPrivilegeEscalation"] is False, name
        assert context["readOnlyRootFilesystem"] is True, name
        assert context["capabilities"] == {"drop": ["ALL"]}, name
        for bound in ("requests", "limits"):
            assert set(container["resources"][bound]) == {"cpu", "memory"}, name
        mounts = {m["mountPath"] for m in container["volumeMounts"]}
        assert "/tmp" in mounts, name  # the only writable place
        assert all(m.get("readOnly") for m in container["volumeMounts"] if m["mountPath"] != "/tmp")


def test_commands_and_probes_are_ones_the_cli_accepts() -> None:
    parser = build_parser()
    assert _container(API)["args"] == ["serve"]
    assert _container(RELAY)["args"] == ["relay"]
    assert _container(MIGRATE)["args"] == ["migrate", "--wait", "60"]
    probes = []
    for workload in WORKLOADS:
        container = _container(workload)
        parser.parse_args(container["args"])
        for kind in ("readinessProbe", "livenessProbe", "startupProbe"):
            if kind in container:
                command = container[kind]["exec"]["command"]
                assert command[:2] == ["auth-service", "health"], command
                args = parser.parse_args(command[1:])
                probes.append((workload["metadata"]["name"], kind, args))
                # An exec probe's default timeout (1 s) is too short to start Python.
                assert container[kind]["timeoutSeconds"] > args.timeout
    by_name = {(name, kind): args for name, kind, args in probes}
    assert set(by_name) == {
        ("auth-service", "readinessProbe"),
        ("auth-service", "livenessProbe"),
        ("auth-service-relay", "livenessProbe"),
    }
    # Readiness is the gRPC health (database, schema, draining); liveness never is:
    # a database outage must not restart every pod.
    assert by_name["auth-service", "readinessProbe"].http is None
    metrics_port = CONFIG["METRICS_LISTEN"].rpartition(":")[2]
    for key in (("auth-service", "livenessProbe"), ("auth-service-relay", "livenessProbe")):
        assert by_name[key].http == f"http://127.0.0.1:{metrics_port}/metrics"


def test_every_variable_is_one_the_configuration_knows() -> None:
    secret_keys = {
        (name, key) for name, doc in SECRETS.items() for key in doc.get("stringData", {})
    }
    for workload in WORKLOADS:
        names = [name for name, _ in _env(workload)]
        assert len(names) == len(set(names)), workload["metadata"]["name"]
        for name, how in _env(workload):
            assert name in KNOWN_VARS, name
            ref = how.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                assert (ref["name"], ref["key"]) in secret_keys, ref
    for volume in API["spec"]["template"]["spec"]["volumes"]:
        if "secret" in volume:
            assert volume["secret"]["secretName"] in SECRETS


def _files(workload: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """Mounted path of each secret key -> (secret, key)."""
    pod = workload["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    out = {}
    for mount in _container(workload)["volumeMounts"]:
        secret = volumes[mount["name"]].get("secret")
        if secret:
            for key in SECRETS[secret["secretName"]]["stringData"]:
                out[f"{mount['mountPath']}/{key}"] = (secret["secretName"], key)
    return out


def _materialise(tmp: Path, ca: Authority) -> None:
    """The Secrets' files under `tmp` (instead of /etc/auth-service): the example
    tokens as they are, a real certificate for the TLS placeholders."""
    cert = ca.issue("auth-service", server=True, dns_names=("auth-service-headless",))
    contents = {
        "tls.crt": cert.cert.decode(),
        "tls.key": cert.key.decode(),
        "ca.crt": ca.pem.decode(),
    }
    for path, (secret, key) in _files(API).items():
        target = tmp / path.removeprefix(MOUNT_ROOT)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(contents.get(key, SECRETS[secret]["stringData"][key]))


def _process_env(workload: dict[str, Any], tmp: Path, remap: dict[str, str]) -> dict[str, str]:
    """The container's environment as a local process gets it: secrets from the
    example (DATABASE_URL replaced), mounted files under `tmp`, values in `remap`
    replaced."""
    env = {}
    for name, how in _env(workload):
        if "valueFrom" in how:
            ref = how["valueFrom"]["secretKeyRef"]
            value = SECRETS[ref["name"]]["stringData"][ref["key"]]
        else:
            value = how["value"]
        env[name] = remap.get(name, value).replace(MOUNT_ROOT, f"{tmp}/")
    return env


def test_settings_build_and_agree_with_the_manifests(tmp_path: Path) -> None:
    _materialise(tmp_path, Authority(f"k8s-ca-{uuid.uuid4().hex[:6]}"))
    api = Settings.from_env(_process_env(API, tmp_path, {}))
    assert insecure_listen_problem(api) is None  # TLS on: serve binds 0.0.0.0
    assert api.relay_enabled is False
    assert api.auth_tokens_file
    assert api.tls_cert_file
    assert api.tls_key_file
    assert api.max_connection_age_s == 300  # as docs/operations.md#scale-out says
    relay = Settings.from_env(_process_env(RELAY, tmp_path, {}), command="relay")
    assert relay.kafka_bootstrap_servers

    pod = API["spec"]["template"]["spec"]
    pre_stop = _container(API)["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    budget = int(pre_stop[1]) + api.shutdown_grace_s + 5  # + closing the pool
    assert pod["terminationGracePeriodSeconds"] > budget

    ports = {p["name"]: p["containerPort"] for p in _container(API)["ports"]}
    assert ports == {
        "grpc": int(api.listen.rpartition(":")[2]),
        "metrics": int(str(api.metrics_listen).rpartition(":")[2]),
    }
    relay_ports = {p["name"]: p["containerPort"] for p in _container(RELAY)["ports"]}
    assert relay_ports == {"metrics": int(str(relay.metrics_listen).rpartition(":")[2])}
    for workload, port in ((API, ports["metrics"]), (RELAY, relay_ports["metrics"])):
        notes = workload["spec"]["template"]["metadata"]["annotations"]
        assert notes["prometheus.io/scrape"] == "true"
        assert notes["prometheus.io/port"] == str(port)

    # The database connection budget the ConfigMap's comment claims.
    hpa = _one("HorizontalPodAutoscaler", "auth-service")
    surge = API["spec"]["strategy"]["rollingUpdate"]["maxSurge"]
    connections = (hpa["spec"]["maxReplicas"] + surge) * (api.pool_max_size + 1)
    connections += RELAY["spec"]["replicas"] * 2
    assert connections <= 90, connections  # PostgreSQL's default max_connections: 100


def test_services_budgets_autoscaler_and_policies_select_the_right_pods() -> None:
    api_labels, relay_labels = _pod_labels(API), _pod_labels(RELAY)
    service = _one("Service", "auth-service-headless")
    assert service["spec"]["clusterIP"] == "None"  # clients balance with round_robin
    assert _selects(service["spec"]["selector"], api_labels)
    assert not _selects(service["spec"]["selector"], relay_labels)
    api_ports = {p["name"] for p in _container(API)["ports"]}
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= api_ports

    assert _selects(_one("PodDisruptionBudget", "auth-service")["spec"]["selector"]["matchLabels"], api_labels)  # fmt: skip
    relay_pdb = _one("PodDisruptionBudget", "auth-service-relay")["spec"]
    assert _selects(relay_pdb["selector"]["matchLabels"], relay_labels)
    assert relay_pdb["minAvailable"] < RELAY["spec"]["replicas"]

    target = _one("HorizontalPodAutoscaler", "auth-service")["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", API["metadata"]["name"])

    policies = [o for o in OBJECTS if o["kind"] == "NetworkPolicy"]
    for workload in WORKLOADS:
        labels = _pod_labels(workload)
        mine = [p for p in policies if _selects(p["spec"]["podSelector"]["matchLabels"], labels)]
        assert len(mine) == 1, workload["metadata"]["name"]
        spec = mine[0]["spec"]
        assert spec["policyTypes"] == ["Ingress", "Egress"]
        names = {p["name"] for p in _container(workload).get("ports", [])}
        for rule in spec.get("ingress", []):
            assert {p["port"] for p in rule["ports"]} <= names
        egress_ports = {p["port"] for rule in spec["egress"] for p in rule["ports"]}
        wants = {5432, 53} | ({9092} if workload is RELAY else set())
        assert egress_ports == wants, workload["metadata"]["name"]


# --- the containers, run as processes -------------------------------------------


@pytest.mark.slow
async def test_containers_run_and_pass_their_probes(
    database_url: str, kafka_bootstrap: str, tmp_path: Path
) -> None:
    """serve, relay and migrate with the manifests' args and environment, outside a
    container. On purpose different: loopback addresses and free ports instead of
    0.0.0.0:50051/9090, files under tmp_path instead of /etc/auth-service, the test
    database and the embedded broker (KAFKA_ENABLE_IDEMPOTENCE=false: it lacks
    InitProducerId), a certificate made here for the TLS placeholders."""
    _materialise(tmp_path, Authority(f"k8s-ca-{uuid.uuid4().hex[:6]}"))
    topic = f"k8s-{uuid.uuid4().hex[:10]}"
    await create_topic(kafka_bootstrap, topic, 1)
    grpc_port, api_metrics, relay_metrics = free_port(), free_port(), free_port()
    kafka = {"KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "KAFKA_TOPIC": topic}
    kafka["KAFKA_ENABLE_IDEMPOTENCE"] = "false"
    common = {"DATABASE_URL": database_url, **kafka}
    api_env = _process_env(
        API,
        tmp_path,
        {
            **common,
            "GRPC_LISTEN": f"127.0.0.1:{grpc_port}",
            "METRICS_LISTEN": f"127.0.0.1:{api_metrics}",
        },
    )
    relay_env = _process_env(
        RELAY, tmp_path, {**common, "METRICS_LISTEN": f"127.0.0.1:{relay_metrics}"}
    )

    def probe(workload: dict[str, Any], kind: str, metrics_port: int) -> list[str]:
        command = _container(workload)[kind]["exec"]["command"]
        return [
            re.sub(r"127\.0\.0\.1:\d+", f"127.0.0.1:{metrics_port}", word).replace(
                MOUNT_ROOT, f"{tmp_path}/"
            )
            for word in command[1:]
        ]

    migrate_env = _process_env(MIGRATE, tmp_path, {"DATABASE_URL": database_url})
    code, out, err = await run_cli(*_container(MIGRATE)["args"], env=clean_env(**migrate_env))
    assert (code, out.strip()) == (0, "no pending migrations"), err

    async with (
        Service("auth-service", *_container(API)["args"], env=clean_env(**api_env)) as api,
        Service("auth-service", *_container(RELAY)["args"], env=clean_env(**relay_env)) as relay,
    ):

        async def passes(argv: list[str], env: dict[str, str]) -> bool:
            code, _, _ = await run_cli(*argv, env=clean_env(**env))
            return code == 0

        ready = probe(API, "readinessProbe", api_metrics)
        assert "--server-name" in ready  # verifies the certificate's name over 127.0.0.1
        await api.wait_until_up(lambda: passes(ready, api_env))
        await api.wait_until_up(lambda: passes(probe(API, "livenessProbe", api_metrics), api_env))
        relay_alive = probe(RELAY, "livenessProbe", relay_metrics)
        await relay.wait_until_up(lambda: passes(relay_alive, relay_env))
        # JSON logs from both (LOG_FORMAT from the ConfigMap).
        assert api.json_lines()
        assert relay.json_lines()
    assert api.returncode == 0
    assert relay.returncode == 0
