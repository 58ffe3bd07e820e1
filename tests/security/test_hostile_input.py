"""Property-based hostile input against a real server and database.

Every request field gets random text, unicode (NUL, control and format characters,
right-to-left marks), near-miss and invalid UUIDs, SQL fragments, huge strings,
empty values, 1001 ids and duplicates. Each answer must be the precise status an
independent oracle predicts (never INTERNAL or UNKNOWN), the server must stay
healthy, and reads must leave the database byte-for-byte unchanged.

Lone surrogates cannot be encoded by a protobuf client at all; the raw-frame tests
send invalid UTF-8 (and CESU-8 surrogates) on the wire instead.
"""

from __future__ import annotations

import logging
import re
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING

import asyncpg
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from auth_client.contract import admin_pb2, admin_pb2_grpc, auth_pb2, auth_pb2_grpc
from auth_service.api.server import AuthServer
from tests.security.conftest import ADMIN, READER, md, secure_settings

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from google.protobuf.message import Message

FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
LIMIT = 64 * 1024  # the default MAX_REQUEST_BYTES
CANONICAL = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)
OK = grpc.StatusCode.OK
INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND
EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED
NEVER = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}

SAMPLE = "6f1c2a9e-3b4d-4e5f-8a7b-9c0d1e2f3a4b"
SQL = [
    "' OR '1'='1",
    "'; DROP TABLE users; --",
    f"{SAMPLE}' OR 1=1 --",
    f"{SAMPLE}'); DELETE FROM users; --",
    "1; SELECT pg_sleep(10)",
    "$1",
    "%",
    "\\x00",
    "' UNION SELECT email FROM users --",
]
SPECIAL = [
    "",
    " ",
    "\x00",
    SAMPLE + "\x00",
    "\x00" * 36,
    "\u202e" + SAMPLE[1:],
    "\ufeff" + SAMPLE,
    SAMPLE.upper(),
    "{" + SAMPLE + "}",
    "urn:uuid:" + SAMPLE,
    SAMPLE.replace("-", ""),
    SAMPLE + "\n",
    " " + SAMPLE,
    "0" * 36,
    "\uff10" * 8 + SAMPLE[8:],  # fullwidth digits
    "\u0660" * 8 + SAMPLE[8:],  # Arabic-Indic digits
    "g" * 8 + SAMPLE[8:],
    "x" * 100_000,
    "\u00e9" * 40_000,  # 80 KB of UTF-8
    "\U0001f600" * 5_000,
]


def near_miss(text: str, index: int, char: str) -> str:
    return text[: index % len(text)] + char + text[index % len(text) + 1 :]


any_text = st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=80)
uuids = st.uuids().map(str)
user_ids = st.one_of(
    st.sampled_from(SPECIAL + SQL),
    any_text,
    uuids,
    uuids.map(str.upper),
    st.builds(near_miss, uuids, st.integers(0, 35), st.characters(exclude_categories=["Cs"])),
)


@dataclass
class Target:
    server: AuthServer
    auth: auth_pb2_grpc.AuthServiceStub
    admin: admin_pb2_grpc.UserAdminServiceStub
    channel: grpc.aio.Channel
    database_url: str
    active: list[str]
    deleted: list[str]


async def outcome(call: object) -> tuple[grpc.StatusCode, str, object]:
    try:
        reply = await call  # type: ignore[misc]
    except grpc.aio.AioRpcError as exc:
        return exc.code(), exc.details() or "", None
    return OK, "", reply


def too_big(message: Message) -> bool:
    return message.ByteSize() > LIMIT


def well_formed(text: str) -> bool:
    return CANONICAL.fullmatch(text) is not None


async def snapshot(database_url: str) -> tuple[object, ...]:
    """Row counts and a checksum of every row of the tables reads could touch."""
    conn = await asyncpg.connect(database_url)
    try:
        out = []
        for table in ("users", "outbox"):
            row = await conn.fetchrow(
                f"SELECT count(*), md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), ''))"
                f" FROM {table} t"
            )
            out.append(tuple(row))  # type: ignore[arg-type]
        return tuple(out)
    finally:
        await conn.close()


@pytest.fixture
async def target(database_url: str, caplog: pytest.LogCaptureFixture) -> AsyncIterator[Target]:
    caplog.set_level(logging.WARNING, logger="auth_service")
    async with (
        AuthServer(secure_settings(database_url, statement_timeout_ms=10_000)) as srv,
        grpc.aio.insecure_channel(srv.address) as ch,
    ):
        admin = admin_pb2_grpc.UserAdminServiceStub(ch)
        ids = []
        for i in range(6):
            request = admin_pb2.CreateUserRequest(username=f"seed{i}", email=f"seed{i}@example.com")
            reply = await admin.CreateUser(request, metadata=md(ADMIN), timeout=10)
            ids.append(reply.user.id)
        for user_id in ids[4:]:
            request = admin_pb2.DeleteUserRequest(user_id=user_id)
            await admin.DeleteUser(request, metadata=md(ADMIN), timeout=10)
        t = Target(
            srv, auth_pb2_grpc.AuthServiceStub(ch), admin, ch, database_url, ids[:4], ids[4:]
        )
        yield t
        # The server is healthy and still answers correctly...
        health = health_pb2_grpc.HealthStub(ch)
        reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=10)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        request = auth_pb2.UserExistsRequest(user_id=ids[0])
        assert (await t.auth.UserExists(request, metadata=md(READER), timeout=10)).exists
    # ...and nothing was answered as an internal error.
    assert not [r for r in caplog.records if "failed (request id" in r.getMessage()]


@pytest.fixture
async def reads_only(target: Target) -> AsyncIterator[Target]:
    """The target, checked after the test: not one row changed."""
    before = await snapshot(target.database_url)
    yield target
    assert await snapshot(target.database_url) == before


@FUZZ
@given(user_id=user_ids)
async def test_user_exists_and_get_user(reads_only: Target, user_id: str) -> None:
    target = reads_only
    request = auth_pb2.UserExistsRequest(user_id=user_id)
    code, details, reply = await outcome(
        target.auth.UserExists(request, metadata=md(READER), timeout=10)
    )
    if too_big(request):
        assert code is EXHAUSTED, (code, details)
    elif well_formed(user_id):
        assert code is OK, (code, details)
        assert reply.state == auth_pb2.USER_STATE_NOT_FOUND  # type: ignore[attr-defined]
    else:
        assert code is INVALID, (code, details)
        assert details == "user_id must be a UUID in hyphenated text form"

    get = auth_pb2.GetUserRequest(user_id=user_id)
    code, details, _ = await outcome(target.auth.GetUser(get, metadata=md(READER), timeout=10))
    expected = EXHAUSTED if too_big(get) else NOT_FOUND if well_formed(user_id) else INVALID
    assert code is expected, (code, details)


@FUZZ
@given(
    picks=st.lists(st.one_of(user_ids, st.sampled_from(["active", "deleted"])), max_size=25),
    dup=st.integers(0, 3),
)
async def test_batch_user_exists(reads_only: Target, picks: list[str], dup: int) -> None:
    target = reads_only
    texts = [
        target.active[len(p) % 4]
        if p == "active"
        else target.deleted[len(p) % 2]
        if p == "deleted"
        else p
        for p in picks
    ]
    texts = texts + texts[:1] * dup  # duplicates are answered once per position
    request = auth_pb2.BatchUserExistsRequest(user_ids=texts)
    code, details, reply = await outcome(
        target.auth.BatchUserExists(request, metadata=md(READER), timeout=10)
    )
    if too_big(request):
        assert code is EXHAUSTED, (code, details)
        return
    bad = [i for i, t in enumerate(texts) if not well_formed(t)]
    if bad:
        assert code is INVALID, (code, details)
        assert details == f"user_ids[{bad[0]}] must be a UUID in hyphenated text form"
        return
    assert code is OK, (code, details)
    results = reply.results  # type: ignore[attr-defined]
    assert [r.user_id for r in results] == texts
    for text, result in zip(texts, results, strict=True):
        if text in target.active:
            assert result.state == auth_pb2.USER_STATE_ACTIVE
        elif text in target.deleted:
            assert result.state == auth_pb2.USER_STATE_DELETED
        else:
            assert result.state == auth_pb2.USER_STATE_NOT_FOUND


async def test_batch_edges(reads_only: Target) -> None:
    target = reads_only
    cases = {
        "1001 valid ids": ([str(uuid.uuid4()) for _ in range(1001)], INVALID),
        "1001 empty ids": ([""] * 1001, INVALID),
        "1000 duplicates": ([target.active[0]] * 1000, OK),
        "1000 ids, the last malformed": ([str(uuid.uuid4()) for _ in range(999)] + ["x"], INVALID),
        "no ids": ([], OK),
        "SQL in every position": (SQL, INVALID),
    }
    for name, (texts, expected) in cases.items():
        request = auth_pb2.BatchUserExistsRequest(user_ids=texts)
        code, details, reply = await outcome(
            target.auth.BatchUserExists(request, metadata=md(READER), timeout=30)
        )
        assert code is expected, (name, code, details)
        if code is OK:
            assert len(reply.results) == len(texts)  # type: ignore[attr-defined]


@FUZZ
@given(
    username=st.one_of(
        st.sampled_from(SPECIAL + SQL),
        any_text,
        st.from_regex(r"[A-Za-z0-9._-]{1,64}", fullmatch=True),
    ),
    display_name=st.one_of(st.sampled_from(SPECIAL + SQL), any_text),
    email=st.one_of(st.none(), st.sampled_from(SPECIAL + SQL), any_text, st.emails()),
)
async def test_create_user(
    target: Target, username: str, display_name: str, email: str | None
) -> None:
    request = admin_pb2.CreateUserRequest(username=username, display_name=display_name)
    if email is not None:
        request.email = email
    code, details, reply = await outcome(
        target.admin.CreateUser(request, metadata=md(ADMIN), timeout=10)
    )
    assert code not in NEVER, (code, details)
    if too_big(request):
        assert code is EXHAUSTED
    elif re.fullmatch(r"[A-Za-z0-9._-]{1,64}", username) is None:
        assert code is INVALID, (code, details)
    else:
        assert code in {OK, INVALID, grpc.StatusCode.ALREADY_EXISTS}, (code, details)
    if code is OK:
        user = reply.user  # type: ignore[attr-defined]
        assert user.username == username
        assert not any(f.name == "email" for f, _ in user.ListFields())
    elif code is INVALID:
        for value in (username, display_name, email or ""):
            if len(value) >= 6:  # errors never echo the input
                assert value not in details


@FUZZ
@given(user_id=user_ids)
async def test_delete_user(target: Target, user_id: str) -> None:
    request = admin_pb2.DeleteUserRequest(user_id=user_id)
    code, details, _ = await outcome(
        target.admin.DeleteUser(request, metadata=md(ADMIN), timeout=10)
    )
    expected = EXHAUSTED if too_big(request) else NOT_FOUND if well_formed(user_id) else INVALID
    assert code is expected, (code, details)


@FUZZ
@given(
    value=st.one_of(
        st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=300),
        st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=300).map(
            lambda t: "Bearer " + t
        ),
        st.sampled_from([f"Bearer {READER[:-1]}", f"bearer {READER}x", f"Bearer  {ADMIN} x"]),
    )
)
async def test_authorization_header(reads_only: Target, value: str) -> None:
    target = reads_only
    request = auth_pb2.UserExistsRequest(user_id=target.active[0])
    code, details, _ = await outcome(
        target.auth.UserExists(request, metadata=(("authorization", value),), timeout=10)
    )
    assert code is grpc.StatusCode.UNAUTHENTICATED, (code, details)
    assert value.strip() not in details or len(value.strip()) < 6
