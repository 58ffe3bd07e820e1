"""The client's side of caller authentication and TLS: the bearer token goes
with every call, auth errors are errors (never an outage to fall back from),
and TLS / mTLS channels built from a target connect only with the right
certificates."""

from __future__ import annotations

import dataclasses
import datetime as dt
import ipaddress
import uuid
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from auth_client import (
    AuthClient,
    BreakerConfig,
    FallbackPolicy,
    PermissionDeniedError,
    ServiceUnavailableError,
    TLSConfig,
    UnauthenticatedError,
)
from auth_service.api.callers import TokenRegistry
from auth_service.api.server import AuthServer
from auth_service.config import Settings
from auth_service.config.tokens import Caller
from tests.client.conftest import CountingInterceptor, seed_users
from tests.conftest import ADMIN_TOKEN, make_settings


@pytest.fixture
def settings(database_url: str) -> Settings:
    """Like `auth-service serve`: reads need a known token."""
    return make_settings(database_url, allow_unauthenticated_reads=False)


async def test_the_token_is_sent_with_every_call(
    make_client, counter: CountingInterceptor, settings: Settings
) -> None:
    (user,), _ = await seed_users(settings.database_url, 1)
    client: AuthClient = await make_client(token=ADMIN_TOKEN)

    assert await client.user_exists(user) is True
    assert await client.users_exist([uuid.uuid4(), uuid.uuid4()])
    assert await client.get_user(user) is not None

    assert counter.calls == {"UserExists": 1, "BatchUserExists": 1, "GetUser": 1}
    assert all(("authorization", f"Bearer {ADMIN_TOKEN}") in md for md in counter.metadata)


@pytest.mark.parametrize("token", [None, "an-unknown-token-0123456789"])
async def test_a_missing_or_unknown_token_is_unauthenticated_and_never_trips_the_breaker(
    make_client, token: str | None
) -> None:
    client: AuthClient = await make_client(
        token=token,
        breaker=BreakerConfig(fail_max=2),
        fallback=FallbackPolicy.FAIL_OPEN,  # an auth error is not an outage
    )
    for _ in range(5):
        with pytest.raises(UnauthenticatedError) as info:
            await client.user_exists(uuid.uuid4())
        assert isinstance(info.value, PermissionDeniedError)
        assert info.value.code is grpc.StatusCode.UNAUTHENTICATED
        assert isinstance(info.value.__cause__, grpc.aio.AioRpcError)
    assert client.stats().breaker_state == "closed"
    assert client.stats().fallback_open == 0


async def test_a_token_without_the_read_scope_is_permission_denied(settings: Settings) -> None:
    token = "a-token-without-scopes-0123456789"
    tokens = TokenRegistry([(token, Caller("metrics-scraper", frozenset()))])
    async with (
        AuthServer(settings, tokens=tokens) as server,
        AuthClient(server.address, token=token, timeout=5) as client,
    ):
        with pytest.raises(PermissionDeniedError) as info:
            await client.require_user(uuid.uuid4())
        assert not isinstance(info.value, UnauthenticatedError)


# -- TLS --------------------------------------------------------------------------


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _issue(
    cn: str, issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None, *, server: bool
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(issuer[0].subject if issuer else _name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
    return builder.sign(issuer[1] if issuer else key, hashes.SHA256()), key


@dataclasses.dataclass
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: bytes
    client_key: bytes


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    ca = _issue("test CA", None, server=False)
    server_cert, server_key = _issue("auth-service", ca, server=True)
    client_cert, client_key = _issue("messaging", ca, server=False)
    pem = serialization.Encoding.PEM
    paths = {
        "ca": ca[0].public_bytes(pem),
        "server.crt": server_cert.public_bytes(pem),
        "server.key": _pem_key(server_key),
    }
    for name, data in paths.items():
        (tmp_path / name).write_bytes(data)
    return Pki(
        ca=tmp_path / "ca",
        server_cert=tmp_path / "server.crt",
        server_key=tmp_path / "server.key",
        client_cert=client_cert.public_bytes(pem),
        client_key=_pem_key(client_key),
    )


def _tls_settings(settings: Settings, pki: Pki, *, mutual: bool) -> Settings:
    fields = Settings.__dataclass_fields__
    if "tls_cert_file" not in fields:
        pytest.skip("this server has no TLS settings yet (issue 5)")
    return settings.replace(
        tls_cert_file=str(pki.server_cert),
        tls_key_file=str(pki.server_key),
        tls_client_ca_file=str(pki.ca) if mutual else None,
    )


async def test_tls_channel_built_from_a_target(settings: Settings, pki: Pki) -> None:
    (user,), _ = await seed_users(settings.database_url, 1)
    async with AuthServer(_tls_settings(settings, pki, mutual=False)) as server:
        tls = TLSConfig(root_certificates=pki.ca)  # a path
        async with AuthClient(server.address, tls=tls, token=ADMIN_TOKEN, timeout=5) as client:
            assert await client.user_exists(user) is True
        async with AuthClient(server.address, token=ADMIN_TOKEN, timeout=2) as plaintext:
            with pytest.raises(ServiceUnavailableError):
                await plaintext.user_exists(user)


async def test_mtls_needs_the_client_certificate(settings: Settings, pki: Pki) -> None:
    (user,), _ = await seed_users(settings.database_url, 1)
    async with AuthServer(_tls_settings(settings, pki, mutual=True)) as server:
        mutual = TLSConfig(
            root_certificates=pki.ca.read_bytes(),
            certificate_chain=pki.client_cert,
            private_key=pki.client_key,
        )
        async with AuthClient(server.address, tls=mutual, token=ADMIN_TOKEN, timeout=5) as client:
            assert await client.user_exists(user) is True
        no_cert = TLSConfig(root_certificates=pki.ca)
        async with AuthClient(server.address, tls=no_cert, token=ADMIN_TOKEN, timeout=2) as client:
            with pytest.raises(ServiceUnavailableError):
                await client.user_exists(user)
