"""Callers and scopes against a real server with reads closed: who gets which status."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from auth_client.contract import admin_pb2, admin_pb2_grpc, auth_pb2, auth_pb2_grpc
from auth_service.api.callers import TokenRegistry
from auth_service.api.server import AuthServer
from auth_service.config import ConfigError, Settings
from auth_service.config.tokens import SCOPE_ADMIN, SCOPE_READ, TokenFormatError, parse_tokens
from tests.conftest import eventually
from tests.helpers import expect_status
from tests.security.conftest import (
    ADMIN,
    ADMIN_ONLY,
    OTHER_READER,
    READER,
    Stubs,
    md,
    secure_settings,
)

if TYPE_CHECKING:
    from pathlib import Path

SOME_ID = "00000000-0000-4000-8000-000000000000"
UNAUTH = grpc.StatusCode.UNAUTHENTICATED
DENIED = grpc.StatusCode.PERMISSION_DENIED


def exists(stubs: Stubs, metadata: tuple[tuple[str, str], ...] | None) -> object:
    return stubs.auth.UserExists(
        auth_pb2.UserExistsRequest(user_id=SOME_ID), metadata=metadata, timeout=10
    )


@pytest.mark.parametrize(
    "metadata",
    [
        None,
        md("not-a-known-token-0123456789"),
        (("authorization", f"Basic {READER}"),),  # right secret, wrong scheme
        (("authorization", "Bearer"),),
        (("authorization", "Bearer    "),),
        (("x-token", READER),),
        (("authorization", f"Bearer {READER}"), ("authorization", f"Bearer {READER}")),
    ],
    ids=[
        "missing",
        "unknown",
        "basic-scheme",
        "bearer-no-token",
        "bearer-blank",
        "other-header",
        "two-authorization-headers",
    ],
)
async def test_reads_without_a_known_token_are_unauthenticated(
    stubs: Stubs, metadata: tuple[tuple[str, str], ...] | None
) -> None:
    err = await expect_status(exists(stubs, metadata), UNAUTH)
    assert READER not in (err.details() or "")
    # Every read method, not just one.
    await expect_status(
        stubs.auth.GetUser(auth_pb2.GetUserRequest(user_id=SOME_ID), metadata=metadata, timeout=10),
        UNAUTH,
    )
    await expect_status(
        stubs.auth.BatchUserExists(
            auth_pb2.BatchUserExistsRequest(user_ids=[SOME_ID]), metadata=metadata, timeout=10
        ),
        UNAUTH,
    )


async def test_auth_is_checked_before_the_input(stubs: Stubs) -> None:
    """A stranger learns nothing about validation: malformed input without a token is
    UNAUTHENTICATED, not INVALID_ARGUMENT."""
    await expect_status(
        stubs.auth.UserExists(auth_pb2.UserExistsRequest(user_id="nope"), timeout=10), UNAUTH
    )


async def test_reader_reads_but_cannot_administer(stubs: Stubs) -> None:
    reply = await exists(stubs, md(READER))
    assert reply.state == auth_pb2.USER_STATE_NOT_FOUND  # type: ignore[attr-defined]
    err = await expect_status(
        stubs.admin.CreateUser(
            admin_pb2.CreateUserRequest(username="mallory"), metadata=md(READER), timeout=10
        ),
        DENIED,
    )
    assert SCOPE_ADMIN in (err.details() or "")
    await expect_status(
        stubs.admin.DeleteUser(
            admin_pb2.DeleteUserRequest(user_id=SOME_ID), metadata=md(READER), timeout=10
        ),
        DENIED,
    )


async def test_admin_scope_alone_does_not_grant_reads(stubs: Stubs) -> None:
    created = await stubs.admin.CreateUser(
        admin_pb2.CreateUserRequest(username="prov1"), metadata=md(ADMIN_ONLY), timeout=10
    )
    err = await expect_status(exists(stubs, md(ADMIN_ONLY)), DENIED)
    assert SCOPE_READ in (err.details() or "")
    # The full admin (both scopes) can read what was created.
    got = await stubs.auth.GetUser(
        auth_pb2.GetUserRequest(user_id=created.user.id), metadata=md(ADMIN), timeout=10
    )
    assert got.user.username == "prov1"


async def test_admin_api_without_a_known_token_is_unauthenticated(stubs: Stubs) -> None:
    for metadata in (None, md("unknown-token-0123456789abc")):
        await expect_status(
            stubs.admin.CreateUser(
                admin_pb2.CreateUserRequest(username="eve"), metadata=metadata, timeout=10
            ),
            UNAUTH,
        )


async def test_health_and_reflection_stay_open(stubs: Stubs) -> None:
    health = health_pb2_grpc.HealthStub(stubs.channel)
    reply = await health.Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    refl = reflection_pb2_grpc.ServerReflectionStub(stubs.channel)
    call = refl.ServerReflectionInfo(timeout=10)
    await call.write(reflection_pb2.ServerReflectionRequest(list_services=""))
    answer = await call.read()
    await call.done_writing()
    names = {s.name for s in answer.list_services_response.service}  # type: ignore[union-attr]
    assert {"auth.v1.AuthService", "auth.v1.UserAdminService"} <= names


async def test_admin_tokens_env_keeps_working(database_url: str) -> None:
    """ADMIN_TOKENS (the foundation's variable) is the caller `admin` with both scopes."""
    token = "legacy-admin-token-0123456789"
    settings = secure_settings(database_url, admin_tokens=(token,), auth_tokens=())
    async with AuthServer(settings) as srv, grpc.aio.insecure_channel(srv.address) as ch:
        admin = admin_pb2_grpc.UserAdminServiceStub(ch)
        created = await admin.CreateUser(
            admin_pb2.CreateUserRequest(username="legacy"), metadata=md(token), timeout=10
        )
        auth = auth_pb2_grpc.AuthServiceStub(ch)
        reply = await auth.UserExists(
            auth_pb2.UserExistsRequest(user_id=created.user.id), metadata=md(token), timeout=10
        )
        assert reply.exists


async def test_anonymous_reads_only_when_explicitly_enabled(database_url: str) -> None:
    assert Settings(database_url=database_url).allow_unauthenticated_reads is False
    dev = secure_settings(database_url, allow_unauthenticated_reads=True)
    async with AuthServer(dev) as srv, grpc.aio.insecure_channel(srv.address) as ch:
        auth = auth_pb2_grpc.AuthServiceStub(ch)
        reply = await auth.UserExists(auth_pb2.UserExistsRequest(user_id=SOME_ID), timeout=10)
        assert reply.state == auth_pb2.USER_STATE_NOT_FOUND
        # ...but never writes.
        admin = admin_pb2_grpc.UserAdminServiceStub(ch)
        await expect_status(
            admin.CreateUser(admin_pb2.CreateUserRequest(username="anon"), timeout=10), UNAUTH
        )
        # ...and a token nobody issued is refused even here: a wrong token must fail
        # locally as it will in production, not pass as anonymous.
        await expect_status(
            auth.UserExists(
                auth_pb2.UserExistsRequest(user_id=SOME_ID),
                metadata=md("not-issued-token-0123456789"),
                timeout=10,
            ),
            UNAUTH,
        )


async def test_several_tokens_per_caller(database_url: str) -> None:
    old, new = "rotating-old-token-0123456789", "rotating-new-token-0123456789"
    entries = parse_tokens(f"billing users:read {old}\nbilling users:read {new}")
    async with (
        AuthServer(secure_settings(database_url, auth_tokens=tuple(entries))) as srv,
        grpc.aio.insecure_channel(srv.address) as ch,
    ):
        auth = auth_pb2_grpc.AuthServiceStub(ch)
        for token in (old, new):
            request = auth_pb2.UserExistsRequest(user_id=SOME_ID)
            await auth.UserExists(request, metadata=md(token), timeout=10)
        assert srv.tokens.callers == {"billing"}


async def test_token_file_rotation_without_restart(
    database_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Add the new token, roll callers over, drop the old one: the running server
    follows the file; a broken edit keeps the previous tokens."""
    old, new = "file-old-token-0123456789abcd", "file-new-token-0123456789abcd"
    path = tmp_path / "tokens"
    path.write_text(f"# mounted secret\nbilling users:read {old}\n")
    settings = secure_settings(
        database_url, auth_tokens=(), auth_tokens_file=str(path), tokens_reload_interval_s=0.1
    )
    async with AuthServer(settings) as srv, grpc.aio.insecure_channel(srv.address) as ch:
        auth = auth_pb2_grpc.AuthServiceStub(ch)

        async def code_for(token: str) -> grpc.StatusCode:
            try:
                request = auth_pb2.UserExistsRequest(user_id=SOME_ID)
                await auth.UserExists(request, metadata=md(token), timeout=10)
            except grpc.aio.AioRpcError as exc:
                return exc.code()
            return grpc.StatusCode.OK

        assert await code_for(old) is grpc.StatusCode.OK
        assert await code_for(new) is UNAUTH

        path.write_text(f"billing users:read {old}\nbilling users:read {new}\n")
        await eventually(lambda: _is(code_for(new), grpc.StatusCode.OK))
        assert await code_for(old) is grpc.StatusCode.OK  # both valid during the roll-over

        # A broken edit is logged and ignored: the old file's tokens stay in force.
        path.write_text(f"billing users:read {new}\nthis line is broken\n")
        await eventually(lambda: _logged(caplog, "not reloaded, keeping the previous tokens"))
        assert await code_for(old) is grpc.StatusCode.OK
        assert old not in caplog.text
        assert new not in caplog.text

        path.write_text(f"billing users:read {new}\n")
        await eventually(lambda: _is(code_for(old), UNAUTH))
        assert await code_for(new) is grpc.StatusCode.OK


async def _is(call: object, code: grpc.StatusCode) -> bool:
    return await call is code  # type: ignore[misc]


async def _logged(caplog: pytest.LogCaptureFixture, text: str) -> bool:
    return text in caplog.text


def test_token_list_format_and_errors_never_show_tokens() -> None:
    entries = parse_tokens(
        "a users:read aaaaaaaaaaaaaaaa1 # comment\n\n  # only a comment\n"
        "b users:admin,users:read bbbbbbbbbbbbbbbb2=;c users:read c-c.c_c~c+c/cccccc="
    )
    assert [(e.caller.name, sorted(e.caller.scopes)) for e in entries] == [
        ("a", ["users:read"]),
        ("b", ["users:admin", "users:read"]),
        ("c", ["users:read"]),
    ]
    secret = "s3cr3t-but-too-short"[:12]
    bad = f"a users:read {secret}\nb users:write {READER}\nc users:read\nd e f g\n"
    with pytest.raises(TokenFormatError) as info:
        parse_tokens(bad)
    text = str(info.value)
    assert "line 1" in text
    assert "line 2" in text
    assert "line 3" in text
    assert secret not in text
    assert READER not in text
    # One token for two callers, or one caller with two scope sets, is refused.
    with pytest.raises(TokenFormatError):
        TokenRegistry.from_entries(parse_tokens(f"a users:read {READER}\nb users:read {READER}"))
    with pytest.raises(TokenFormatError):
        TokenRegistry.from_entries(
            parse_tokens(f"a users:read {READER}\na users:admin {OTHER_READER}")
        )


def test_tokens_are_kept_as_digests_only() -> None:
    registry = TokenRegistry.from_entries(parse_tokens(f"messaging users:read {READER}"))
    entries = parse_tokens(f"messaging users:read {READER}")
    assert READER not in repr(registry)
    assert READER not in repr(entries)
    assert READER.encode() not in b"".join(registry._by_digest)
    assert registry.lookup(READER) is not None
    assert registry.lookup(READER + "x") is None
    settings = secure_settings("postgresql://u:p@h/db")
    assert READER not in repr(settings)


def test_environment_errors_name_every_bad_key(tmp_path: Path) -> None:
    missing = tmp_path / "missing.pem"
    bad_file = tmp_path / "tokens"
    bad_file.write_text(f"messaging users:read {READER}\nbroken\n")
    env = {
        "DATABASE_URL": "postgresql://localhost/auth",
        "RELAY_ENABLED": "false",
        "AUTH_TOKENS": f"messaging users:read {READER}; x users:nope {OTHER_READER}",
        "AUTH_TOKENS_FILE": str(bad_file),
        "TLS_CERT_FILE": str(missing),
        "MAX_CONCURRENT_RPCS": "-1",
        "RATE_LIMIT_RPS": "fast",
        "ALLOW_INSECURE": "maybe",
    }
    with pytest.raises(ConfigError) as info:
        Settings.from_env(env)
    assert set(info.value.problems) == {
        "AUTH_TOKENS",
        "AUTH_TOKENS_FILE",
        "TLS_CERT_FILE",
        "MAX_CONCURRENT_RPCS",
        "RATE_LIMIT_RPS",
        "ALLOW_INSECURE",
    }
    assert "entry 2" in info.value.problems["AUTH_TOKENS"]
    assert "line 2" in info.value.problems["AUTH_TOKENS_FILE"]
    assert READER not in str(info.value)
    assert OTHER_READER not in str(info.value)


def test_cross_checks_of_security_settings(tmp_path: Path) -> None:
    pem = tmp_path / "x.pem"
    pem.write_text("-----BEGIN CERTIFICATE-----\n")
    base = {"DATABASE_URL": "postgresql://localhost/auth", "RELAY_ENABLED": "false"}
    with pytest.raises(ConfigError) as info:
        Settings.from_env(
            {
                **base,
                "TLS_CLIENT_CA_FILE": str(pem),
                "TLS_CERT_FILE": str(pem),
                "MAX_REQUEST_BYTES": "4096",
                "MAX_CONCURRENT_RPCS": "10",
                "MAX_CONCURRENT_RPCS_PER_CALLER": "11",
                "RATE_LIMIT_BURST": "5",
            }
        )
    assert set(info.value.problems) == {
        "TLS_KEY_FILE",
        "MAX_REQUEST_BYTES",
        "MAX_CONCURRENT_RPCS_PER_CALLER",
        "RATE_LIMIT_BURST",
    }
    ok = Settings.from_env({**base, "AUTH_TOKENS": f"m users:read {READER}"})
    assert ok.per_caller_concurrency == ok.max_concurrent_rpcs // 2
    assert ok.allow_unauthenticated_reads is False
    assert [e.caller.name for e in ok.auth_tokens] == ["m"]


async def test_unknown_caller_uuid_is_not_an_oracle(stubs: Stubs) -> None:
    """Without a token, an existing and a missing id get the same answer."""
    created = await stubs.admin.CreateUser(
        admin_pb2.CreateUserRequest(username=f"u{uuid.uuid4().hex[:8]}"),
        metadata=md(ADMIN),
        timeout=10,
    )
    for user_id in (created.user.id, SOME_ID):
        err = await expect_status(
            stubs.auth.UserExists(auth_pb2.UserExistsRequest(user_id=user_id), timeout=10), UNAUTH
        )
        assert err.details() == "missing or malformed bearer token"
