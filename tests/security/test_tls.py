"""TLS and mTLS against a real server, with certificates made in the test; the
plaintext guard of `auth-service serve`."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import ssl
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import pytest

from auth_client import AuthClient, TLSConfig, UnauthenticatedError
from auth_client.contract import auth_pb2, auth_pb2_grpc
from auth_service.api.server import AuthServer
from auth_service.config import ConfigError
from tests.conftest import eventually
from tests.security.conftest import ADMIN, PKI, READER, md, secure_settings
from tests.security.pki import der_serial, serial_of

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from auth_service.config import Settings

REPO = Path(__file__).resolve().parents[2]
SOME_ID = "00000000-0000-4000-8000-000000000000"


def tls_settings(database_url: str, pki: PKI, *, mutual: bool, **overrides: object) -> Settings:
    return secure_settings(
        database_url,
        tls_cert_file=str(pki.directory / "server.crt"),
        tls_key_file=str(pki.directory / "server.key"),
        tls_client_ca_file=str(pki.ca_file) if mutual else None,
        **overrides,
    )


@pytest.fixture
async def tls_server(database_url: str, pki: PKI) -> AsyncIterator[AuthServer]:
    async with AuthServer(tls_settings(database_url, pki, mutual=False)) as srv:
        yield srv


@pytest.fixture
async def mtls_server(database_url: str, pki: PKI) -> AsyncIterator[AuthServer]:
    async with AuthServer(tls_settings(database_url, pki, mutual=True)) as srv:
        yield srv


async def call(
    address: str, credentials: grpc.ChannelCredentials | None, token: str = READER
) -> grpc.StatusCode:
    """One UserExists over a fresh channel: OK or the status code it failed with."""
    channel = (
        grpc.aio.insecure_channel(address)
        if credentials is None
        else grpc.aio.secure_channel(address, credentials)
    )
    async with channel:
        try:
            await auth_pb2_grpc.AuthServiceStub(channel).UserExists(
                auth_pb2.UserExistsRequest(user_id=SOME_ID), metadata=md(token), timeout=5
            )
        except grpc.aio.AioRpcError as exc:
            return exc.code()
    return grpc.StatusCode.OK


async def test_tls_with_the_right_ca(tls_server: AuthServer, pki: PKI) -> None:
    creds = grpc.ssl_channel_credentials(root_certificates=pki.ca.pem)
    assert await call(tls_server.address, creds) is grpc.StatusCode.OK
    # Also by name: the certificate is valid for localhost.
    localhost = f"localhost:{tls_server.port}"
    assert await call(localhost, creds) is grpc.StatusCode.OK
    # TLS does not replace the token.
    assert await call(tls_server.address, creds, token="unknown-0123456789abcdef") is (
        grpc.StatusCode.UNAUTHENTICATED
    )


async def test_tls_refuses_plaintext_and_untrusted_servers(
    tls_server: AuthServer, pki: PKI
) -> None:
    assert await call(tls_server.address, None) is grpc.StatusCode.UNAVAILABLE
    wrong_ca = grpc.ssl_channel_credentials(root_certificates=pki.rogue_ca.pem)
    assert await call(tls_server.address, wrong_ca) is grpc.StatusCode.UNAVAILABLE


async def test_mtls_needs_a_client_certificate_from_the_client_ca(
    mtls_server: AuthServer, pki: PKI
) -> None:
    good = grpc.ssl_channel_credentials(pki.ca.pem, pki.client.key, pki.client.cert)
    assert await call(mtls_server.address, good) is grpc.StatusCode.OK
    no_cert = grpc.ssl_channel_credentials(pki.ca.pem)
    assert await call(mtls_server.address, no_cert) is grpc.StatusCode.UNAVAILABLE
    rogue = grpc.ssl_channel_credentials(pki.ca.pem, pki.rogue_client.key, pki.rogue_client.cert)
    assert await call(mtls_server.address, rogue) is grpc.StatusCode.UNAVAILABLE
    assert await call(mtls_server.address, None) is grpc.StatusCode.UNAVAILABLE
    # The server keeps serving the right clients after the failed handshakes.
    assert await call(mtls_server.address, good) is grpc.StatusCode.OK


async def test_auth_client_over_mtls(mtls_server: AuthServer, pki: PKI) -> None:
    client_dir = pki.directory / "client"
    client_dir.mkdir(exist_ok=True)
    cert, key = pki.client.write(client_dir, "messaging")
    tls = TLSConfig(root_certificates=pki.ca_file, certificate_chain=cert, private_key=key)
    async with AuthClient(mtls_server.address, token=READER, tls=tls, timeout=5) as client:
        assert await client.user_exists(SOME_ID) is False
    async with AuthClient(
        mtls_server.address, token="unknown-token-0123456789", tls=tls, timeout=5
    ) as client:
        with pytest.raises(UnauthenticatedError):
            await client.user_exists(SOME_ID)


def _served_serial(port: int, ca_pem: bytes) -> int:
    ctx = ssl.create_default_context(cadata=ca_pem.decode())
    ctx.set_alpn_protocols(["h2"])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
            der = tls.getpeercert(binary_form=True)
    assert der is not None
    return der_serial(der)


async def test_renewed_certificate_is_served_without_restart(
    database_url: str, pki: PKI, tmp_path: Path
) -> None:
    cert, key = pki.server.write(tmp_path, "server")
    settings = secure_settings(database_url, tls_cert_file=str(cert), tls_key_file=str(key))
    async with AuthServer(settings) as srv:
        first = await asyncio.to_thread(_served_serial, srv.port, pki.ca.pem)
        assert first == serial_of(pki.server.cert)
        renewed = pki.ca.issue("auth-service", server=True)
        # A half-done rotation (new certificate, old key) keeps the old pair...
        cert.write_bytes(renewed.cert)
        assert await asyncio.to_thread(_served_serial, srv.port, pki.ca.pem) == first
        # ...until the key matches.
        key.write_bytes(renewed.key)

        async def serves_renewed() -> bool:
            serial = await asyncio.to_thread(_served_serial, srv.port, pki.ca.pem)
            return serial == serial_of(renewed.cert)

        await eventually(serves_renewed)
        creds = grpc.ssl_channel_credentials(root_certificates=pki.ca.pem)
        assert await call(srv.address, creds) is grpc.StatusCode.OK


async def test_bad_tls_files_are_a_configuration_error(database_url: str, pki: PKI) -> None:
    other = pki.ca.issue("other", server=True)
    key = pki.directory / "other.key"
    key.write_bytes(other.key)
    settings = secure_settings(
        database_url,
        tls_cert_file=str(pki.directory / "server.crt"),
        tls_key_file=str(key),  # does not belong to server.crt
    )
    with pytest.raises(ConfigError) as info:
        async with AuthServer(settings):
            pass
    assert "TLS_CERT_FILE" in info.value.problems


def _serve(
    env: dict[str, str], *args: str, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "auth_service", "serve", *args],
        env={**os.environ, "RELAY_ENABLED": "false", **env},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.mark.parametrize("listen", ["0.0.0.0:0", "[::]:0", "10.1.2.3:50051", "auth.internal:443"])
def test_serve_refuses_plaintext_on_a_non_loopback_address(listen: str) -> None:
    done = _serve({"DATABASE_URL": "postgresql://127.0.0.1:1/none", "GRPC_LISTEN": listen})
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "refusing to listen on" in lines[0]
    assert "without TLS" in lines[0]
    assert "ALLOW_INSECURE" in lines[0]


def test_serve_with_tls_or_the_insecure_flag_starts_on_any_address(
    database_url: str, pki: PKI
) -> None:
    base = {
        "DATABASE_URL": database_url,
        "GRPC_LISTEN": "0.0.0.0:0",
        "LOG_LEVEL": "INFO",
        "AUTH_TOKENS": f"messaging users:read {READER}",
    }
    tls = {
        "TLS_CERT_FILE": str(pki.directory / "server.crt"),
        "TLS_KEY_FILE": str(pki.directory / "server.key"),
    }
    for env, args, mode in (
        ({**base, **tls}, (), "(TLS;"),
        ({**base, "ALLOW_INSECURE": "true"}, (), "(plaintext;"),
        (base, ("--allow-insecure",), "(plaintext;"),
    ):
        assert _starts(env, args, mode)


def _starts(env: dict[str, str], args: tuple[str, ...], mode: str) -> bool:
    with subprocess.Popen(
        [sys.executable, "-m", "auth_service", "serve", *args],
        env={**os.environ, "RELAY_ENABLED": "false", **env},
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        try:
            assert proc.stderr is not None
            for line in proc.stderr:
                if "listening on" in line:
                    assert mode in line, line
                    return True
            pytest.fail(f"serve exited with {proc.wait()} before listening")
        finally:
            proc.terminate()
            proc.wait(30)
    return False


async def test_admin_cli_over_mtls(mtls_server: AuthServer, pki: PKI, tmp_path: Path) -> None:
    """`auth-service users` reaches a TLS server with the same flags as `health`."""
    cert, key = pki.client.write(tmp_path, "cli")

    async def users(*flags: str) -> tuple[int, str, str]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "auth_service",
            "users",
            "--target",
            mtls_server.address,
            "--token",
            ADMIN,
            "--timeout",
            "5",
            *flags,
            "create",
            "tls_admin_user",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
        assert proc.returncode is not None
        return proc.returncode, out.decode(), err.decode()

    code, _, err = await users()  # plaintext against a TLS server
    assert code == 1
    assert "UNAVAILABLE" in err
    code, out, err = await users(
        "--ca-file", str(pki.ca_file), "--cert-file", str(cert), "--key-file", str(key)
    )
    assert code == 0, err
    assert json.loads(out)["username"] == "tls_admin_user"
