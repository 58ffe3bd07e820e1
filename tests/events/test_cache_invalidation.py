"""The ready-made handler `invalidate_cache(AuthClient)`: a deleted user stops
"existing" in every service's cache within the event latency, not a TTL."""

from __future__ import annotations

import asyncio
import uuid
from typing import TYPE_CHECKING

from auth_client import AuthClient, CacheConfig
from auth_client.events import UserDeletedConsumer, UserDeletedEvent, all_of, invalidate_cache
from tests.events.support import admin_stub
from tests.helpers import create_user, delete_user

if TYPE_CHECKING:
    from auth_service.api.server import AuthServer

AN_HOUR = CacheConfig(positive_ttl=3600.0)


async def test_user_exists_is_false_right_after_the_event_despite_a_long_ttl(
    events_server: AuthServer, kafka_bootstrap: str, topic: str
) -> None:
    async with (
        admin_stub(events_server.address) as admin,
        AuthClient(events_server.address, cache=AN_HOUR) as subscribed,
        AuthClient(events_server.address, cache=AN_HOUR) as not_subscribed,
    ):
        user_id = (await create_user(admin)).id
        assert await subscribed.user_exists(user_id) is True
        assert await not_subscribed.user_exists(user_id) is True  # both cache "exists"

        invalidated = asyncio.Event()

        async def after(event: UserDeletedEvent) -> None:
            if event.user_id == user_id:
                invalidated.set()

        consumer = UserDeletedConsumer(
            all_of(invalidate_cache(subscribed), after),
            bootstrap_servers=kafka_bootstrap,
            group_id=f"cache-{uuid.uuid4().hex[:8]}",
            topic=topic,
        )
        async with consumer:
            task = asyncio.create_task(consumer.run())
            await delete_user(admin, user_id)
            await asyncio.wait_for(invalidated.wait(), 60)
            rpcs = subscribed.stats().rpcs
            assert await subscribed.user_exists(user_id) is False
            # Answered from the cache the handler updated, without asking again.
            assert subscribed.stats().rpcs == rpcs
            consumer.stop()
            await task
        # Without the handler the hour-long TTL keeps the deleted user "existing".
        assert await not_subscribed.user_exists(user_id) is True
