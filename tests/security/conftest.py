"""Fixtures for the security tests: servers with reads closed (no anonymous
callers), named callers with scopes, and certificates made on the fly."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import grpc
import pytest

from auth_client.contract import admin_pb2_grpc, auth_pb2_grpc
from auth_service.api.server import AuthServer
from auth_service.config.tokens import parse_tokens
from tests.conftest import make_settings
from tests.security.pki import Authority, Pair

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    from auth_service.config import Settings

READER = "reader-token-0123456789abcdef"
OTHER_READER = "other-reader-token-0123456789"
ADMIN = "admin-token-0123456789abcdef"
ADMIN_ONLY = "admin-only-token-0123456789ab"  # users:admin without users:read
TOKEN_LINES = f"""
# name      scopes                  token
messaging   users:read              {READER}
content     users:read              {OTHER_READER}
ops         users:admin,users:read  {ADMIN}
provisioner users:admin             {ADMIN_ONLY}
"""


def md(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


def secure_settings(database_url: str, **overrides: Any) -> Settings:
    """Settings as `serve` runs them: no anonymous reads, callers from AUTH_TOKENS."""
    values: dict[str, Any] = {
        "admin_tokens": (),
        "auth_tokens": tuple(parse_tokens(TOKEN_LINES)),
        "allow_unauthenticated_reads": False,
    }
    values.update(overrides)
    return make_settings(database_url, **values)


@pytest.fixture
async def secure_server(database_url: str) -> AsyncIterator[AuthServer]:
    async with AuthServer(secure_settings(database_url)) as srv:
        yield srv


@dataclass
class Stubs:
    channel: grpc.aio.Channel
    auth: auth_pb2_grpc.AuthServiceStub
    admin: admin_pb2_grpc.UserAdminServiceStub


@pytest.fixture
async def stubs(secure_server: AuthServer) -> AsyncIterator[Stubs]:
    async with grpc.aio.insecure_channel(secure_server.address) as ch:
        yield Stubs(ch, auth_pb2_grpc.AuthServiceStub(ch), admin_pb2_grpc.UserAdminServiceStub(ch))


@dataclass(frozen=True)
class PKI:
    ca: Authority
    rogue_ca: Authority
    server: Pair
    client: Pair
    rogue_client: Pair
    directory: Path

    @property
    def ca_file(self) -> Path:
        return self.directory / "ca.crt"


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    directory = tmp_path_factory.mktemp("pki")
    ca, rogue = Authority("auth-test-ca"), Authority("rogue-ca")
    out = PKI(
        ca=ca,
        rogue_ca=rogue,
        server=ca.issue("auth-service", server=True),
        client=ca.issue("messaging", server=False),
        rogue_client=rogue.issue("messaging", server=False),
        directory=directory,
    )
    out.ca_file.write_bytes(ca.pem)
    out.server.write(directory, "server")
    return out
