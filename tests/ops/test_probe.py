"""`auth-service health`, the image's HEALTHCHECK, run as the container runs it (the
console script in a child process) against real servers."""

from __future__ import annotations

import asyncio
import uuid
from typing import TYPE_CHECKING

from auth_service.api.server import AuthServer
from auth_service.local.embedded import free_port
from tests.conftest import make_settings
from tests.go_tools import GRPC_HEALTH_PROBE, go_binary
from tests.ops.support import clean_env, run_cli
from tests.security.pki import Authority

if TYPE_CHECKING:
    from pathlib import Path


async def test_serving_server_is_healthy(database_url: str) -> None:
    async with AuthServer(make_settings(database_url)) as server:
        code, out, _ = await run_cli("health", "--target", server.address, env=clean_env())
        assert (code, out.strip()) == (0, "SERVING")
        code, out, _ = await run_cli(
            "health",
            "--target",
            server.address,
            "--service",
            "auth.v1.AuthService",
            env=clean_env(),
        )
        assert (code, out.strip()) == (0, "SERVING")
        # A service the server does not know is not healthy.
        code, out, _ = await run_cli(
            "health", "--target", server.address, "--service", "nope.v1.Nope", env=clean_env()
        )
        assert code == 1
        assert "NOT_FOUND" in out


async def test_default_target_is_the_local_server_of_grpc_listen(database_url: str) -> None:
    """In the image the probe runs with no flags: GRPC_LISTEN=0.0.0.0:50051 means
    "ask 127.0.0.1:50051"."""
    async with AuthServer(make_settings(database_url)) as server:
        env = clean_env(GRPC_LISTEN=f"0.0.0.0:{server.port}")
        code, out, _ = await run_cli("health", env=env)
        assert (code, out.strip()) == (0, "SERVING")


async def test_nothing_listening_is_unhealthy() -> None:
    code, out, _ = await run_cli(
        "health", "--target", f"127.0.0.1:{free_port()}", "--timeout", "2", env=clean_env()
    )
    assert code == 1
    assert out.startswith(("UNAVAILABLE", "DEADLINE_EXCEEDED"))


async def test_http_mode_probes_the_metrics_endpoint(database_url: str) -> None:
    async with AuthServer(make_settings(database_url, metrics_listen="127.0.0.1:0")) as server:
        assert server.metrics is not None
        code, out, _ = await run_cli("health", "--http", server.metrics.url, env=clean_env())
        assert (code, out.strip()) == (0, "HTTP 200")
        base = f"http://{server.metrics.address}"
        code, out, _ = await run_cli("health", "--http", f"{base}/nope", env=clean_env())
        assert (code, out.strip()) == (1, "HTTP 404")
    code, out, _ = await run_cli(
        "health", "--http", f"http://127.0.0.1:{free_port()}/metrics", env=clean_env()
    )
    assert code == 1
    assert out.startswith("unreachable")


async def test_tls_and_mtls_servers(database_url: str, tmp_path: Path) -> None:
    ca = Authority(f"probe-ca-{uuid.uuid4().hex[:6]}")
    cert, key = ca.issue("auth-service", server=True).write(tmp_path, "server")
    client_cert, client_key = ca.issue("probe", server=False).write(tmp_path, "client")
    ca_file = tmp_path / "ca.crt"
    ca_file.write_bytes(ca.pem)
    tls = make_settings(database_url, tls_cert_file=str(cert), tls_key_file=str(key))
    async with AuthServer(tls) as server:
        code, out, _ = await run_cli(
            "health", "--target", server.address, "--ca-file", str(ca_file), env=clean_env()
        )
        assert (code, out.strip()) == (0, "SERVING")
        # The certificate names 127.0.0.1 and localhost; another name must not pass.
        code, _, _ = await run_cli(
            "health", "--target", server.address, "--ca-file", str(ca_file),
            "--server-name", "elsewhere.example", env=clean_env(),
        )  # fmt: skip
        assert code == 1
        code, _, _ = await run_cli("health", "--target", server.address, env=clean_env())
        assert code == 1  # plaintext against TLS

    mtls = tls.replace(tls_client_ca_file=str(ca_file))
    async with AuthServer(mtls) as server:
        code, out, _ = await run_cli(
            "health", "--target", server.address, "--ca-file", str(ca_file),
            "--cert-file", str(client_cert), "--key-file", str(client_key), env=clean_env(),
        )  # fmt: skip
        assert (code, out.strip()) == (0, "SERVING")
        code, _, _ = await run_cli(
            "health", "--target", server.address, "--ca-file", str(ca_file), env=clean_env()
        )
        assert code == 1  # no client certificate


async def test_grpc_health_probe_checks_serve_as_kubernetes_users_run_it(
    database_url: str,
) -> None:
    """grpc-health-probe (the Go CLI many Kubernetes deployments probe with) against
    a real server: SERVING for the server and each service, its own exit code for a
    service the server does not know."""
    probe = str(go_binary(*GRPC_HEALTH_PROBE))
    async with AuthServer(make_settings(database_url)) as server:

        async def run(*args: str) -> tuple[int, str]:
            proc = await asyncio.create_subprocess_exec(
                probe, f"-addr={server.address}", "-connect-timeout=5s", "-rpc-timeout=5s", *args,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            )  # fmt: skip
            out, _ = await proc.communicate()
            return int(proc.returncode or 0), out.decode()

        for service in ("", "auth.v1.AuthService", "auth.v1.UserAdminService"):
            code, out = await run(f"-service={service}")
            assert (code, out.strip()) == (0, "status: SERVING"), (service, out)
        code, out = await run("-service=nope.v1.Nope")
        assert code == 3, out  # the probe's "RPC failed" (the server answers NOT_FOUND)
        assert "NotFound" in out or "NOT_FOUND" in out, out
