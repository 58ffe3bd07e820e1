"""Coalescing and auto-batching against a real server: RPCs are counted by an
interceptor on the client's own channel."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from auth_client import AuthClient, BatchConfig
from tests.client.conftest import CountingInterceptor, seed_users


async def test_1000_concurrent_lookups_of_one_uncached_id_send_one_rpc(
    make_client, counter: CountingInterceptor, settings
) -> None:
    (user,), _ = await seed_users(settings.database_url, 1)
    client: AuthClient = await make_client()

    answers = await asyncio.gather(*(client.user_exists(user) for _ in range(1000)))

    assert answers == [True] * 1000
    assert counter.calls == {"UserExists": 1}
    stats = client.stats()
    assert stats.rpcs == 1
    assert stats.coalesced == 999


async def test_1000_concurrent_lookups_of_distinct_ids_send_a_handful_of_batches(
    make_client, counter: CountingInterceptor, settings
) -> None:
    active, deleted = await seed_users(settings.database_url, 600, deleted=200)
    never = [uuid.uuid4() for _ in range(200)]
    expected = {
        **dict.fromkeys(active, True),
        **dict.fromkeys(deleted, False),
        **dict.fromkeys(never, False),
    }
    ids = list(expected)
    client: AuthClient = await make_client()

    # Half of the callers pass the id as text: both forms share the cache key.
    answers = await asyncio.gather(
        *(client.user_exists(str(uid) if i % 2 else uid) for i, uid in enumerate(ids))
    )

    assert answers == [expected[uid] for uid in ids]
    assert set(counter.calls) == {"BatchUserExists"}
    assert 1 <= counter.calls["BatchUserExists"] <= 5
    assert sum(counter.batch_sizes) == 1000
    assert all(size <= 1000 for size in counter.batch_sizes)


async def test_cancelling_some_callers_leaves_the_others_correct(
    make_client, counter: CountingInterceptor, settings
) -> None:
    active, _ = await seed_users(settings.database_url, 300)
    never = [uuid.uuid4() for _ in range(300)]
    client: AuthClient = await make_client()
    shared = active[0]

    distinct = [asyncio.create_task(client.user_exists(uid)) for uid in active + never]
    same = [asyncio.create_task(client.user_exists(shared)) for _ in range(200)]
    await asyncio.sleep(0)  # every caller has joined a lookup; none has an answer
    cancelled = distinct[::3] + same[::2]
    for task in cancelled:
        task.cancel()
    results = await asyncio.gather(*distinct, *same, return_exceptions=True)

    by_task = dict(zip(distinct + same, results, strict=True))
    for task in cancelled:
        assert isinstance(by_task[task], asyncio.CancelledError)
    for task, uid in zip(distinct, active + never, strict=True):
        if task not in cancelled:
            assert by_task[task] is (uid in set(active))
    for task in same:
        if task not in cancelled:
            assert by_task[task] is True
    # The shared RPCs were not cancelled with their first callers: every
    # answer, even for cancelled callers, reached the cache.
    assert client.stats().cache_size == 600
    before = counter.total
    assert await client.users_exist(active + never) == {
        **dict.fromkeys(active, True),
        **dict.fromkeys(never, False),
    }
    assert counter.total == before


async def test_more_than_1000_ids_are_split_into_batches_of_at_most_1000(
    make_client, counter: CountingInterceptor, settings
) -> None:
    active, _ = await seed_users(settings.database_url, 1500)
    never = [uuid.uuid4() for _ in range(1000)]
    client: AuthClient = await make_client()

    answers = await client.users_exist(active + never + active[:10])

    assert answers == {**dict.fromkeys(active, True), **dict.fromkeys(never, False)}
    assert counter.batch_sizes
    assert max(counter.batch_sizes) == 1000
    assert sum(counter.batch_sizes) == 2500


async def test_lookups_arriving_while_a_batch_is_in_flight_are_collected(
    make_client, counter: CountingInterceptor, settings
) -> None:
    active, _ = await seed_users(settings.database_url, 400)
    client: AuthClient = await make_client(batching=BatchConfig(window=0.05))

    first = asyncio.create_task(client.users_exist(active[:100]))
    await asyncio.sleep(0)  # the first batch is on its way
    rest = [asyncio.create_task(client.user_exists(uid)) for uid in active[100:]]
    more = [asyncio.create_task(client.user_exists(uid)) for uid in active[100:200]]

    assert await first == dict.fromkeys(active[:100], True)
    assert await asyncio.gather(*rest, *more) == [True] * 400
    # 100 ids, then the 300 that arrived while it was in flight (the later
    # duplicates joined them): two RPCs.
    assert counter.batch_sizes == [100, 300]
    assert client.stats().coalesced == 100


async def test_ids_collected_meanwhile_go_out_when_the_batch_in_flight_returns(
    make_client, counter: CountingInterceptor, settings
) -> None:
    """The window bounds the wait; the answer of the batch in flight ends it: ids
    that arrived during a round trip do not wait longer than that round trip."""
    active, _ = await seed_users(settings.database_url, 200)
    client: AuthClient = await make_client(batching=BatchConfig(window=30.0))

    first = asyncio.create_task(client.users_exist(active[:100]))
    await asyncio.sleep(0)  # the first batch is on its way
    rest = [asyncio.create_task(client.user_exists(uid)) for uid in active[100:]]

    assert await first == dict.fromkeys(active[:100], True)
    # Well before the 30 s window: sent as soon as the first batch came back.
    assert await asyncio.wait_for(asyncio.gather(*rest), 10) == [True] * 100
    assert counter.batch_sizes == [100, 100]


@pytest.mark.parametrize("window", [0.0, 0.001])
async def test_a_lone_lookup_is_sent_without_waiting_for_the_window(
    make_client, counter: CountingInterceptor, settings, window: float
) -> None:
    (user,), _ = await seed_users(settings.database_url, 1)
    client: AuthClient = await make_client(batching=BatchConfig(window=window))
    assert await client.user_exists(user) is True
    assert counter.calls == {"UserExists": 1}
