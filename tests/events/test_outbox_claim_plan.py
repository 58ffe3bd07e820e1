"""The relay's claim reads a few rows per claimed row whatever the planner's
statistics say (found by the relay-vs-Debezium bench, #26 item 6).

After a quiet period autovacuum's statistics say no outbox row is unpublished; a
backlog that builds up then (Kafka was down) was claimed with a plan that rescanned
every unpublished row for each candidate: 195-345 ms per claim of 100 from 10,000
rows, a tenth of the relay's usual drain rate, until the next automatic analyze.
The work a claim does is measured in buffers (EXPLAIN ANALYZE), not in time."""

from __future__ import annotations

import json
import uuid

import asyncpg
import pytest

from auth_client.contract import USER_DELETED_TYPE
from auth_service.store import outbox

CLAIM_SQL = outbox._CLAIM  # the relay's query itself, as it runs
BACKLOG = 10_000
CLAIM = 100


async def _claim_buffers(conn: asyncpg.Connection) -> int:
    """Shared buffers one claim of CLAIM rows touches (hit or read)."""
    async with conn.transaction():
        plan = await conn.fetchval(
            f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {CLAIM_SQL}",
            CLAIM,
            [USER_DELETED_TYPE],
        )
        top = json.loads(plan)[0]["Plan"]
    return int(top["Shared Hit Blocks"]) + int(top["Shared Read Blocks"])


@pytest.mark.slow
async def test_a_backlog_after_a_quiet_period_is_claimed_without_rescanning_it(
    database_url: str,
) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        # Statistics that say nothing is unpublished (as after a quiet week), kept
        # so: no autovacuum may analyze the table during the test.
        await conn.execute("ALTER TABLE outbox SET (autovacuum_enabled = false)")
        await conn.execute(
            "INSERT INTO outbox (event_id, event_type, partition_key, payload, published_at)"
            " SELECT gen_random_uuid(), $1, gen_random_uuid()::text, '\\x00', now()"
            " FROM generate_series(1, $2)",
            USER_DELETED_TYPE,
            BACKLOG,
        )
        await conn.execute("ANALYZE outbox")
        # Then Kafka is down for a while: a backlog, one event per user.
        await conn.execute(
            "INSERT INTO outbox (event_id, event_type, partition_key, payload)"
            " SELECT gen_random_uuid(), $1, gen_random_uuid()::text, '\\x00'"
            " FROM generate_series(1, $2)",
            USER_DELETED_TYPE,
            BACKLOG,
        )
        buffers = await _claim_buffers(conn)
        # The rows themselves, their index entries and one index probe per
        # candidate: a few buffers per claimed row, not the backlog per row.
        assert buffers < 20 * CLAIM, f"one claim of {CLAIM} touched {buffers} buffers"
        claimed = await conn.fetch(CLAIM_SQL, CLAIM, [USER_DELETED_TYPE])
        assert len(claimed) == CLAIM
        assert [r["id"] for r in claimed] == sorted(r["id"] for r in claimed)
    finally:
        await conn.close()


async def test_a_claim_skips_a_key_whose_earlier_event_is_still_unpublished(
    database_url: str,
) -> None:
    """The rule the rewritten claim keeps: a key's events go out one after another."""
    conn = await asyncpg.connect(database_url)
    key = str(uuid.uuid4())
    try:
        for _ in range(2):
            await conn.execute(
                "INSERT INTO outbox (event_id, event_type, partition_key, payload)"
                " VALUES (gen_random_uuid(), $1, $2, '\\x00')",
                USER_DELETED_TYPE,
                key,
            )
        async with conn.transaction():
            first = await conn.fetch(CLAIM_SQL, 10, [USER_DELETED_TYPE])
            assert len(first) == 1  # the second waits for the first
            await conn.execute(
                "UPDATE outbox SET published_at = now() WHERE id = $1", first[0]["id"]
            )
        second = await conn.fetch(CLAIM_SQL, 10, [USER_DELETED_TYPE])
        assert len(second) == 1
        assert second[0]["id"] > first[0]["id"]
    finally:
        await conn.close()
