"""SHADOW mode and the FAIL_OPEN hook.

In SHADOW mode the caller is told "exists" at once and the real check runs in
the background, sharing the batcher (and so coalescing and batching) with
everything else; a done-callback on the shared future compares the answer. No
task is created per lookup. Every disagreement is logged; failures are counted
every time and logged at most once a second (an outage would flood the log).
"""

from __future__ import annotations

import functools
import inspect
import logging
import time
from typing import TYPE_CHECKING

from auth_client._models import ACTIVE

if TYPE_CHECKING:
    import asyncio
    import uuid
    from collections.abc import Callable

    from auth_client._batcher import Batcher
    from auth_client._breaker import Breaker
    from auth_client._metrics import Counters

log = logging.getLogger("auth_client.shadow")
_FAILURE_LOG_INTERVAL = 1.0


class Shadow:
    def __init__(self, name: str, counters: Counters) -> None:
        self._name = name
        self._counters = counters
        self._failure_logged_at = -_FAILURE_LOG_INTERVAL
        self._failures_unlogged = 0

    def check(
        self,
        batcher: Batcher,
        breaker: Breaker,
        cached: dict[uuid.UUID, bool],
        missing: list[uuid.UUID],
        deadline: float,
    ) -> None:
        """Compare cached answers now, and start lookups of `missing` whose
        answers are compared when they arrive."""
        for key, exists in cached.items():
            if not exists:
                self._disagree(key, "cached answer")
        if not missing:
            return
        if breaker.rejects(time.monotonic()):
            self._failed(len(missing), "circuit breaker open")
            return
        for key in missing:
            batcher.future(key, deadline).add_done_callback(functools.partial(self._done, key))

    def _done(self, key: uuid.UUID, future: asyncio.Future[int]) -> None:
        if future.cancelled():
            return
        error = future.exception()
        if error is not None:
            self._failed(1, f"{type(error).__name__}: {error}")
        elif future.result() != ACTIVE:
            self._disagree(key, "auth-service")

    def _disagree(self, key: uuid.UUID, source: str) -> None:
        self._counters.shadow_disagreements += 1
        log.warning(
            "auth_client %s SHADOW: user %s does not exist according to the %s; answered 'exists'",
            self._name,
            key,
            source,
        )

    def _failed(self, count: int, why: str) -> None:
        self._counters.shadow_failures += count
        self._failures_unlogged += count
        now = time.monotonic()
        if now - self._failure_logged_at >= _FAILURE_LOG_INTERVAL:
            log.warning(
                "auth_client %s SHADOW: %d check(s) failed (%s); answered 'exists'",
                self._name,
                self._failures_unlogged,
                why,
            )
            self._failure_logged_at = now
            self._failures_unlogged = 0


async def report_unverified(
    hook: Callable[[tuple[uuid.UUID, ...]], object] | None,
    user_ids: list[uuid.UUID],
    name: str,
) -> None:
    """Call the FAIL_OPEN hook (plain or coroutine function) with the ids."""
    log.debug("auth_client %s FAIL_OPEN: %d id(s) answered unverified", name, len(user_ids))
    if hook is None:
        return
    result = hook(tuple(user_ids))
    if inspect.isawaitable(result):
        await result
