"""UserState lookups for UserExists and BatchUserExists: memory first (the state
cache and the index of every user), then queries shared by concurrent lookups
(store/lookup_merge.py).

Where an answer may come from (docs/architecture.md, "How fresh an answer is"):

- ACTIVE and DELETED: memory, a read replica (DATABASE_READ_URL) or the primary.
  DELETED is final (ids are never reused); an ACTIVE from a replica is at most its
  lag old, and the deletion's event cleans up after it as ever.
- NOT_FOUND: only a query on the primary. Memory may not have heard yet of a user
  another auth-service replica created a moment ago, and a read replica may not
  have replayed it, so an id either calls NOT_FOUND is asked of the primary again
  (a second merger, `confirmations` counts them). With no replicas the read queries
  go to the primary and one merger does both.

While tracing, each queued lookup carries its call's span context: the query's span
is a child of the first call it answers and links every one; a call answered by the
state cache gets `auth.state_cache.hit` instead of a query span.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Self

from auth_client.contract import UserState
from auth_service import tracing
from auth_service.errors import ServiceError, UnavailableError
from auth_service.lifecycle import Lifecycle, LifecycleGuard
from auth_service.store.lookup_merge import QueryMerger, Waiter, fail
from auth_service.store.pool import Budget
from auth_service.store.state_cache import StateCache
from auth_service.store.users import BY_NUMBER, PRIMARY, UserRepository

log = logging.getLogger(__name__)

_NOT_FOUND = int(UserState.NOT_FOUND)


class StateLookup:
    """`UserState` lookups: from the server's state cache when it has the answer,
    else through the repository, concurrent single lookups merged into shared
    queries. Not thread-safe (one event loop). `max_in_flight=0`: one query per
    lookup. Closing fails the queued lookups and waits for the running queries; a
    closed one answers what memory has and refuses the rest (UNAVAILABLE)."""

    def __init__(
        self,
        users: UserRepository,
        *,
        cache: StateCache | None = None,
        max_in_flight: int = 2,
        max_batch: int = 1000,
        max_window: float = 0.002,
        target_batch: int = 8,
        backlog: Callable[[], int] | None = None,
    ) -> None:
        self._life = LifecycleGuard("the state lookups")
        self._users = users
        self.cache = cache if cache is not None else StateCache(max_size=0)
        self._merge = max_in_flight > 0

        def merger(run: Callable[[list[Waiter]], Awaitable[None]]) -> QueryMerger:
            return QueryMerger(
                run,
                max_in_flight=max_in_flight,
                max_batch=max_batch,
                max_window=max_window,
                target_batch=target_batch,
                backlog=backlog,
            )

        # NOT_FOUND answers are confirmed on the primary; without read replicas the
        # read queries go there already and one merger does both.
        self._confirms = merger(self._confirm)
        self._reads = merger(self._read) if users.reads is not None else self._confirms
        self.hits = 0  # lookups answered from the state cache
        self.batches = 0  # queries sent
        self.lookups = 0  # lookups those queries answered
        self.confirmations = 0  # NOT_FOUND of memory or a replica asked of the primary

    @property
    def _mergers(self) -> list[QueryMerger]:
        return [self._reads] if self._reads is self._confirms else [self._reads, self._confirms]

    @property
    def windows(self) -> int:
        """Queries that waited for a collection window."""
        return sum(m.windows for m in self._mergers)

    def idle(self) -> bool:
        """No lookup queued, in a query, or waiting for a collection window."""
        return all(m.idle() for m in self._mergers)

    def cached(self, user_id: str) -> UserState | None:
        """The state of one canonical id if memory has it (state cache or index):
        no coroutine, no budget, for the calls that need neither. Never NOT_FOUND:
        memory may not have heard of a user another replica created a moment ago,
        so only a query on the primary says that."""
        cached = self.cache.get(user_id)
        if cached is None or cached is UserState.NOT_FOUND:
            return None
        self.hits += 1
        tracing.note("auth.state_cache.hit", value=True)
        return cached

    async def state(self, user_id: str, budget: Budget) -> UserState:
        """The state of one canonical (lower-case) id, sharing a query with others."""
        hint = self.cache.get(user_id)
        if hint is UserState.ACTIVE or hint is UserState.DELETED:
            self.hits += 1
            tracing.note("auth.state_cache.hit", value=True)
            return hint
        # Refused at once, not queued behind queries that wait on the database.
        self._users.status.require()
        if self._life.state is Lifecycle.CLOSED:
            raise UnavailableError("the server is shutting down")
        if not self._merge:  # `_resolve` counts the confirmations
            return await self._alone(user_id, budget, unknown=hint is not None)
        fut: asyncio.Future[UserState] = asyncio.get_running_loop().create_future()
        # An id memory calls NOT_FOUND goes straight to the primary.
        merger = self._reads
        if hint is not None:
            self.confirmations += 1
            merger = self._confirms
        merger.submit((user_id, fut, budget, tracing.current_span_context()))
        return await fut

    async def _alone(self, user_id: str, budget: Budget, *, unknown: bool) -> UserState:
        """One lookup, one query (DB_LOOKUP_CONCURRENCY=0)."""
        self.batches += 1
        self.lookups += 1
        answers = await self._resolve(
            [] if unknown else [user_id], [user_id] if unknown else [], budget
        )
        return BY_NUMBER[answers[user_id]]

    def _live(self, batch: list[Waiter]) -> tuple[list[Waiter], Budget] | None:
        """The waiters of `batch` still waiting (counted as one query) and the budget
        their query runs on; None when every caller has gone."""
        live = [w for w in batch if not w[1].done()]
        if not live:
            return None
        self.batches += 1
        self.lookups += len(live)
        # The query may run as long as the most patient caller in the batch waits;
        # callers with shorter deadlines are cancelled by gRPC on their own.
        return live, max((w[2] for w in live), key=lambda b: b.seconds)

    async def _read(self, batch: list[Waiter]) -> None:
        """A merged read query (a replica when one is readable); its NOT_FOUND
        answers are handed to the confirmations unless the primary gave them, the
        others kept in the cache as fresh as the replica was."""
        if (started := self._live(batch)) is None:
            return
        live, budget = started
        keys = [w[0] for w in live]
        since = self.cache.generation()
        try:
            found, fresh_as_of = await self._users.read_states(
                ",".join(keys), budget, [w[3] for w in live]
            )
        except Exception as exc:
            _failed(live, exc)
            return
        answers = dict(zip(keys, map(BY_NUMBER.__getitem__, found), strict=True))
        self.cache.store(answers, since, fresh_as_of=fresh_as_of)
        for waiter, number in zip(live, found, strict=True):
            if number == _NOT_FOUND and fresh_as_of != PRIMARY:
                self.confirmations += 1
                self._confirms.submit(waiter)
            elif not waiter[1].done():
                waiter[1].set_result(BY_NUMBER[number])

    async def _confirm(self, batch: list[Waiter]) -> None:
        """A merged query on the primary: every answer final, and kept in the cache."""
        if (started := self._live(batch)) is None:
            return
        live, budget = started
        keys = [w[0] for w in live]
        since = self.cache.generation()
        try:
            found = await self._users.states(",".join(keys), budget, [w[3] for w in live])
        except Exception as exc:
            _failed(live, exc)
            return
        answers = dict(zip(keys, map(BY_NUMBER.__getitem__, found), strict=True))
        self.cache.store(answers, since)
        for user_id, fut, _, _ in live:
            if not fut.done():
                fut.set_result(answers[user_id])

    async def states(self, keys: Sequence[str], budget: Budget) -> list[int]:
        """The UserState number of each canonical id, in order (BatchUserExists):
        memory's answers, one read query for the rest, and one query on the primary
        for the ids neither memory nor the replica knows."""
        get = self.cache.get
        # NOT_FOUND from memory is only a hint (see `cached`): asked of the primary.
        hints = [get(key) for key in keys] if self.cache.enabled else [None] * len(keys)
        out: list[int] = [_TRUSTED.get(hint, 0) for hint in hints]
        misses = [k for k, h in zip(keys, hints, strict=True) if h is None]
        unknown = [k for k, h in zip(keys, hints, strict=True) if h is UserState.NOT_FOUND]
        hits = len(keys) - len(misses) - len(unknown)
        self.hits += hits
        tracing.note("auth.state_cache.hits", value=hits)
        if misses or unknown:
            self.batches += 1
            self.lookups += len(misses) + len(unknown)
            answers = await self._resolve(misses, unknown, budget)
            out = [state or answers[key] for key, state in zip(keys, out, strict=True)]
        return out

    async def _resolve(
        self, misses: list[str], unknown: list[str], budget: Budget
    ) -> dict[str, int]:
        """State numbers of `misses` (read from a replica if one is readable) and of
        `unknown` (ids memory calls NOT_FOUND: asked of the primary, with the
        replica's NOT_FOUNDs)."""
        answers: dict[str, int] = {}
        cache = self.cache
        if misses:
            since = cache.generation()
            found, fresh_as_of = await self._users.read_states(",".join(misses), budget)
            answers.update(zip(misses, found, strict=True))
            read = {k: BY_NUMBER[n] for k, n in zip(misses, found, strict=True)}
            cache.store(read, since, fresh_as_of=fresh_as_of)
            if fresh_as_of != PRIMARY:
                unknown = [*unknown, *(k for k, n in answers.items() if n == _NOT_FOUND)]
        if unknown:
            self.confirmations += len(unknown)
            since = cache.generation()
            found = await self._users.states(",".join(unknown), budget)
            answers.update(zip(unknown, found, strict=True))
            cache.store({k: BY_NUMBER[n] for k, n in zip(unknown, found, strict=True)}, since)
        return answers

    async def start(self) -> None:
        self._life.start()

    async def aclose(self) -> None:
        await self._life.close(self._close)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _close(self) -> None:
        """Fail queued lookups and wait for running queries to finish."""
        shutting_down = UnavailableError("the server is shutting down")
        await self._reads.close(shutting_down)
        await self._confirms.close(shutting_down)


def _failed(live: list[Waiter], exc: BaseException) -> None:
    if not isinstance(exc, ServiceError):  # a bug: answer INTERNAL, do not hang callers
        log.error("batched lookup failed", exc_info=exc)
    fail(live, exc)


# The answers memory may give without a query: a state's number, else 0 (ask).
_TRUSTED: dict[UserState | None, int] = {
    UserState.ACTIVE: int(UserState.ACTIVE),
    UserState.DELETED: int(UserState.DELETED),
}
