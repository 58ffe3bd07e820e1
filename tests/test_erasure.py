"""Deleted means erased: a deleted user's personal data leaves the auth database
(at once by default, after PII_RETENTION_S otherwise), while the row stays so
DELETED is still told from NOT_FOUND. Against a real PostgreSQL and real servers."""

from __future__ import annotations

import asyncio
import logging
import uuid

import asyncpg
import grpc
import pytest

from auth_client.contract import admin_pb2_grpc, auth_pb2
from auth_service.api.server import AuthServer
from auth_service.local.embedded import free_port
from auth_service.store.erasure import ErasureJob, erase_due
from tests.conftest import eventually, make_settings
from tests.helpers import ADMIN_TOKEN, create_user, delete_user, expect_status
from tests.ops.support import Service, clean_env, run_cli, samples, value


async def _row(database_url: str, user_id: str) -> asyncpg.Record:
    conn = await asyncpg.connect(database_url)
    try:
        row = await conn.fetchrow("SELECT * FROM users WHERE id = $1", uuid.UUID(user_id))
    finally:
        await conn.close()
    assert row is not None
    return row


async def test_delete_erases_at_once_and_the_api_does_not_change(
    database_url: str, admin_stub: admin_pb2_grpc.UserAdminServiceStub, auth_stub
) -> None:
    user = await create_user(
        admin_stub, "Grace.H", display_name="Grace Hopper", email="grace@example.com"
    )
    first = await delete_user(admin_stub, user.id)

    row = await _row(database_url, user.id)
    assert row["email"] is None
    assert row["username"] == row["display_name"] == f"deleted:{user.id}"
    assert row["erased_at"] is not None
    assert row["deleted_at"] == first.deleted_at.ToDatetime(tzinfo=row["deleted_at"].tzinfo)
    assert row["created_at"] <= row["deleted_at"]

    reply = await auth_stub.UserExists(auth_pb2.UserExistsRequest(user_id=user.id), timeout=10)
    assert reply.state == auth_pb2.USER_STATE_DELETED
    await expect_status(
        auth_stub.GetUser(auth_pb2.GetUserRequest(user_id=user.id), timeout=10),
        grpc.StatusCode.NOT_FOUND,
    )
    again = await delete_user(admin_stub, user.id)
    assert again.already_deleted
    assert again.deleted_at == first.deleted_at  # the original time

    # The name is free again (compared case-insensitively), for a new id.
    taken = await create_user(admin_stub, "grace.h")
    assert taken.id != user.id


async def test_with_a_retention_period_two_replicas_erase_exactly_what_is_due(
    database_url: str,
) -> None:
    settings = make_settings(
        database_url,
        pii_retention_s=3600,
        pii_erasure_interval_s=3600,
        metrics_listen="127.0.0.1:0",
    )
    async with AuthServer(settings) as first:
        async with grpc.aio.insecure_channel(first.address) as channel:
            admin = admin_pb2_grpc.UserAdminServiceStub(channel)
            users = [
                await create_user(admin, email=f"u{i}@example.com", display_name=f"User {i}")
                for i in range(40)
            ]
            for user in users:
                await delete_user(admin, user.id)
        # Nothing erased yet: the retention period has just begun.
        assert (await _row(database_url, users[0].id))["email"] == "u0@example.com"
        due = {u.id for u in users[:30]}
        conn = await asyncpg.connect(database_url)
        try:
            await conn.execute(
                "UPDATE users SET deleted_at = now() - interval '2 hours',"
                " created_at = now() - interval '3 hours' WHERE id = ANY($1::uuid[])",
                list(due),
            )
        finally:
            await conn.close()
    # Two replicas' jobs at once, in batches small enough to interleave.
    conns = [await asyncpg.connect(database_url) for _ in range(2)]
    try:
        counts = await asyncio.gather(*(erase_due(c, 3600, batch=3) for c in conns))
    finally:
        for c in conns:
            await c.close()
    assert sum(counts) == 30  # every due row once, none twice
    assert all(counts)  # both did part of the work
    # A server's own job does the same at start (in the background: a large
    # backlog must not hold up serving) and reports what waits.
    async with AuthServer(settings) as server:
        assert server.metrics is not None
        url = server.metrics.url

        async def reported() -> bool:
            return value(await samples(url), "users_erasure_pending_rows") == 10

        await eventually(reported)
        found = await samples(url)
    assert value(found, "users_erasure_pending_rows") == 10
    assert 0 < value(found, "users_erasure_oldest_pending_age_seconds") < 600
    for user in users:
        row = await _row(database_url, user.id)
        if user.id in due:
            assert row["email"] is None
            assert row["username"] == f"deleted:{user.id}"
        else:
            assert row["email"] is not None
            assert row["erased_at"] is None


async def test_the_one_off_erasure_fixes_old_rows_and_is_a_no_op_the_second_time(
    database_url: str,
) -> None:
    """Rows deleted before erasure existed still hold their personal data."""
    ids = [uuid.uuid4() for _ in range(7)]
    conn = await asyncpg.connect(database_url)
    try:
        await conn.executemany(
            "INSERT INTO users (id, username, display_name, email, deleted_at)"
            " VALUES ($1, $2, $2, $3, now())",
            [(i, f"old_{i.hex[:8]}", f"{i.hex[:6]}@example.com") for i in ids],
        )
    finally:
        await conn.close()
    env = clean_env(DATABASE_URL=database_url)
    code, out, err = await run_cli("erase-deleted", "--batch-size", "3", env=env)
    assert code == 0, err
    assert out.startswith("erased the personal data of 7 deleted user(s)")
    for user_id in ids:
        row = await _row(database_url, str(user_id))
        assert (row["email"], row["username"]) == (None, f"deleted:{user_id}")
    code, out, err = await run_cli("erase-deleted", env=env)
    assert code == 0, err
    assert out.startswith("erased the personal data of 0 deleted user(s)")


async def test_no_event_payload_or_log_line_carries_personal_data(database_url: str) -> None:
    port = free_port()
    target = f"127.0.0.1:{port}"
    env = clean_env(
        DATABASE_URL=database_url,
        GRPC_LISTEN=target,
        ADMIN_TOKENS=ADMIN_TOKEN,
        RELAY_ENABLED="false",
        LOG_LEVEL="DEBUG",
        LOG_FORMAT="json",
    )
    secret = uuid.uuid4().hex[:10]
    username, display, email = f"pii_{secret}", f"Person {secret}", f"p.{secret}@example.com"
    async with Service("auth-service", "serve", env=env) as srv:

        async def up() -> bool:
            code, _, _ = await run_cli("health", "--target", target, env=clean_env())
            return code == 0

        await srv.wait_until_up(up)
        async with grpc.aio.insecure_channel(target) as channel:
            admin = admin_pb2_grpc.UserAdminServiceStub(channel)
            user = await create_user(admin, username, display_name=display, email=email)
            await delete_user(admin, user.id)
            await delete_user(admin, user.id)
        code, out, err = await run_cli(
            "users", "get", user.id, "--target", target, "--token", ADMIN_TOKEN, env=clean_env()
        )
        assert code == 1
        assert '"state": "DELETED"' in out  # the admin CLI shows the tombstone
        assert "NOT_FOUND" in err
        await srv.stop()
        logs = srv.output()
    conn = await asyncpg.connect(database_url)
    try:
        payloads = [bytes(r[0]) for r in await conn.fetch("SELECT payload FROM outbox")]
        stored = await conn.fetchval(
            "SELECT count(*) FROM users WHERE username = $1 OR email = $2", username, email
        )
    finally:
        await conn.close()
    assert len(payloads) == 1
    for personal in (secret, username, display, email):
        assert personal.encode() not in payloads[0]
        assert personal not in logs
    assert stored == 0


class _PoolThatTimesOut:
    """A pool whose every acquire times out (a pure unit: the job's reporting)."""

    def acquire(self) -> _PoolThatTimesOut:
        return self

    async def __aenter__(self) -> None:
        raise TimeoutError

    async def __aexit__(self, *exc: object) -> None:
        return None


async def test_a_failing_erasure_pass_says_why(caplog: pytest.LogCaptureFixture) -> None:
    """An exception without a message (a timeout) used to log "did not run: " and
    nothing more."""
    job = ErasureJob(_PoolThatTimesOut(), retention_s=0, interval_s=3600)  # type: ignore[arg-type]
    with caplog.at_level(logging.WARNING, logger="auth_service.store.erasure"):
        async with job:

            async def logged() -> bool:
                return bool(caplog.records)

            await eventually(logged)
    assert caplog.records[0].getMessage() == (
        "personal-data erasure did not run: no answer (timed out)"
    )
