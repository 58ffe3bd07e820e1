"""`AuthClient`: the public entry point.

The cache-hit path of `user_exists` is kept deliberately bare (one dict lookup,
one read of the cache's clock, one counter): no allocation, no logging, no I/O. Everything
else — coalescing, batching, the breaker, fallbacks and rollout modes — starts
in `Lookup.exist` (`_lookup.py`) on a miss. While the application traces, cache
hits go there too, so that each lookup has its span (`_fast` is off).

With a local replica (`replica=ReplicaConfig(...)`, `_replica.py`) the same path
asks the replica first (a binary search): ACTIVE and DELETED come from there; an id
it does not know goes on to the cache and auth-service as before.
"""

from __future__ import annotations

import enum
import uuid
import warnings
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Self

from auth_client._batcher import Batcher
from auth_client._breaker import Breaker, StateListener
from auth_client._cache import ExistsCache, TextIds
from auth_client._config import (
    BatchConfig,
    BreakerConfig,
    CacheConfig,
    ChannelConfig,
    FallbackPolicy,
    ReplicaConfig,
    RolloutMode,
    TLSConfig,
)
from auth_client._errors import InvalidRequestError, UserNotFoundError
from auth_client._lookup import Lookup
from auth_client._metrics import ClientStats, Counters, register, unregister
from auth_client._models import DELETED, User, UserId, UserState
from auth_client._replica import Replica, ReplicaState, ReplicaStats
from auth_client._transport import Transport, create_channel

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator
    from types import TracebackType

    import grpc

    from auth_client.contract import replication_pb2

_UUID = uuid.UUID

OnUnverified = Callable[[tuple[uuid.UUID, ...]], object]
"""FAIL_OPEN hook: called with the ids answered "exists" without verification
(may be a coroutine function). Its exceptions propagate to the caller."""


class _State(enum.Enum):
    NEW = "new"
    OPEN = "open"
    CLOSED = "closed"


class AuthClient:
    """Validates user ids against auth-service. Use as `async with AuthClient(...)`.

    Built from a `target` ("host:port", "dns:///auth-service:50051") or from a
    caller-supplied `channel=` (the caller then owns its TLS, interceptors and
    closing). One client per event loop; share it across the whole process.

    `replica=ReplicaConfig(...)`: a local replica of every user's state (extra
    `events`), loaded by `start()` / `async with` (`ReplicaLoadError` when it
    cannot be), answers ACTIVE and DELETED without an RPC (docs/client.md).
    """

    def __init__(
        self,
        target: str | None = None,
        *,
        channel: grpc.aio.Channel | None = None,
        token: str | None = None,
        tls: TLSConfig | None = None,
        timeout: float = 0.5,
        cache: CacheConfig | None = None,
        breaker: BreakerConfig | None = None,
        batching: BatchConfig | None = None,
        channel_config: ChannelConfig | None = None,
        interceptors: Sequence[grpc.aio.ClientInterceptor] = (),
        fallback: FallbackPolicy = FallbackPolicy.FAIL_CLOSED,
        rollout: RolloutMode = RolloutMode.ENFORCE,
        on_unverified: OnUnverified | None = None,
        on_breaker_change: StateListener | None = None,
        name: str = "default",
        replica: ReplicaConfig | None = None,
    ) -> None:
        if (target is None) == (channel is None):
            raise ValueError("pass either a target or channel=, not both")
        if channel is not None and (tls is not None or interceptors):
            raise ValueError("tls and interceptors apply to a channel built from a target")
        if not timeout > 0:
            raise ValueError("timeout must be positive")
        self._target = target
        self._channel = channel
        self._owns_channel = channel is None
        self._token = token
        self._tls = tls
        self._channel_config = channel_config or ChannelConfig()
        self._interceptors = tuple(interceptors)
        self._timeout = float(timeout)
        self._fallback = fallback
        self._rollout = rollout
        self._enforce = rollout is RolloutMode.ENFORCE
        # The bare cache-hit path: in ENFORCE mode while the process does not trace.
        self._fast = self._enforce
        self._on_unverified = on_unverified
        self._name = name
        self._counters = Counters()
        cache_config = cache or CacheConfig()
        self._cache = ExistsCache(cache_config)
        self._entries = self._cache.entries
        self._text_ids = TextIds(cache_config.max_size)
        listeners = (on_breaker_change,) if on_breaker_change is not None else ()
        self._breaker = Breaker(breaker or BreakerConfig(), name=name, listeners=listeners)
        self._batching = batching or BatchConfig()
        self._batcher: Batcher | None = None
        self._transport: Transport | None = None
        self._replica = None if replica is None else Replica(replica, self._export, name=name)
        self._lookup = Lookup(
            name=name,
            cache=self._cache,
            breaker=self._breaker,
            counters=self._counters,
            timeout=self._timeout,
            fallback=fallback,
            rollout=rollout,
            on_unverified=on_unverified,
            on_tracing=self._set_traced,
            replica=self._replica,
        )
        self._state = _State.NEW

    def _set_traced(self, on: bool) -> None:
        self._fast = self._enforce and not on

    # -- lifecycle ---------------------------------------------------------

    @property
    def name(self) -> str:
        return self._name

    def _open(self) -> Batcher:
        if self._state is _State.CLOSED:
            raise RuntimeError("AuthClient is closed; create a new one")
        if self._batcher is None:
            if self._channel is None:
                assert self._target is not None
                self._channel = create_channel(
                    self._target,
                    tls=self._tls,
                    config=self._channel_config,
                    interceptors=self._interceptors,
                )
            transport = self._transport = Transport(
                self._channel,
                self._token,
                self._counters,
                self._channel_config.max_rpcs_in_flight,
            )
            self._batcher = Batcher(
                transport, self._breaker, self._cache, self._counters, self._batching
            )
            self._state = _State.OPEN
            register(self)
        return self._batcher

    async def start(self) -> None:
        """Create the channel (done by `async with`, and by the first lookup) and,
        with a replica, load it: `ReplicaLoadError` (the client closed) when it
        cannot be loaded within `ReplicaConfig.load_timeout`."""
        self._open()
        replica = self._replica
        if replica is not None and replica.state is ReplicaState.NEW:
            try:
                await replica.start()
            except BaseException:
                await self.aclose()
                raise

    def _export(
        self, page_size: int, timeout: float
    ) -> AsyncGenerator[replication_pb2.ExportUserStatesResponse, None]:
        """The replica's load: ExportUserStates on this client's channel."""
        self._open()
        assert self._transport is not None
        return self._transport.export(page_size, timeout)

    async def aclose(self) -> None:
        """Stop the replica, fail pending lookups, cancel in-flight RPCs, close an
        owned channel. Idempotent; a closed client cannot be reused."""
        if self._state is _State.CLOSED:
            return
        self._state = _State.CLOSED
        if self._replica is not None:
            await self._replica.aclose()
        self._cache.clear()
        unregister(self)
        if self._batcher is not None:
            await self._batcher.close()
        if self._owns_channel and self._channel is not None:
            await self._channel.close(None)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __del__(self, _warn: Callable[..., None] = warnings.warn) -> None:
        if getattr(self, "_state", None) is _State.OPEN and self._owns_channel:
            _warn(f"unclosed {self!r}", ResourceWarning, stacklevel=1)

    def __repr__(self) -> str:
        where = self._target if self._target is not None else "<channel>"
        return f"AuthClient({where!r}, name={self._name!r}, state={self._state.value})"

    # -- existence checks --------------------------------------------------

    async def user_exists(
        self,
        user_id: UserId,
        *,
        timeout: float | None = None,
        fallback: FallbackPolicy | None = None,
    ) -> bool:
        """Whether the user exists and is not deleted."""
        key = user_id if isinstance(user_id, _UUID) else self._text_ids.get(user_id)
        replica = self._replica
        if replica is not None and self._fast:
            known = replica.exists(key)
            if known is not None:
                self._counters.replica_hits += 1
                return known
        entry = self._entries.get(key)
        if entry is not None and self._fast and entry[1] > self._cache.clock():
            self._counters.cache_hits += 1
            self._entries.move_to_end(key)
            return entry[0]
        return (await self._lookup.exist(self._open(), [key], timeout, fallback))[key]

    async def users_exist(
        self,
        user_ids: Iterable[UserId],
        *,
        timeout: float | None = None,
        fallback: FallbackPolicy | None = None,
    ) -> dict[uuid.UUID, bool]:
        """Existence of each id (any number; sent in RPCs of at most 1000 ids)."""
        if isinstance(user_ids, str | uuid.UUID):
            raise InvalidRequestError("users_exist takes a collection of ids, not one id")
        keys = [self._text_ids.get(value) for value in user_ids]
        if not keys:
            return {}
        unique = list(dict.fromkeys(keys))
        return await self._lookup.exist(self._open(), unique, timeout, fallback)

    async def require_user(
        self,
        user_id: UserId,
        *,
        timeout: float | None = None,
        fallback: FallbackPolicy | None = None,
    ) -> None:
        """Return if the user exists, else raise `UserNotFoundError` (validate
        before inserting a row that references the user)."""
        key = user_id if isinstance(user_id, _UUID) else self._text_ids.get(user_id)
        if not await self.user_exists(key, timeout=timeout, fallback=fallback):
            raise UserNotFoundError((key,))

    async def require_users(
        self,
        user_ids: Iterable[UserId],
        *,
        timeout: float | None = None,
        fallback: FallbackPolicy | None = None,
    ) -> None:
        """Return if every user exists, else raise `UserNotFoundError` naming the
        missing ones."""
        answers = await self.users_exist(user_ids, timeout=timeout, fallback=fallback)
        missing = [key for key, exists in answers.items() if not exists]
        if missing:
            raise UserNotFoundError(missing)

    async def get_user(
        self,
        user_id: UserId,
        *,
        timeout: float | None = None,
    ) -> User | None:
        """The public profile of an active user, or None if it does not exist or
        is deleted. Not subject to the rollout mode or a fallback policy: when
        auth-service cannot answer, this raises `ServiceUnavailableError`."""
        key = self._text_ids.get(user_id)
        return await self._lookup.user(self._open(), key, timeout)

    async def user_states(
        self,
        user_ids: Iterable[UserId],
        *,
        timeout: float | None = None,
    ) -> dict[uuid.UUID, UserState]:
        """The state of each id (ACTIVE, DELETED or NOT_FOUND) as auth-service answers
        it now: no cache, no coalescing, no rollout mode, no fallback. For audits
        such as `auth-toolkit reconcile`, which must tell a deleted user from an id
        that never existed. Sent in RPCs of at most 1000 ids through the circuit
        breaker; raises `ServiceUnavailableError` when auth-service cannot answer."""
        if isinstance(user_ids, str | uuid.UUID):
            raise InvalidRequestError("user_states takes a collection of ids, not one id")
        keys = list(dict.fromkeys(self._text_ids.get(value) for value in user_ids))
        return await self._lookup.states(self._open(), keys, timeout)

    # -- cache control -----------------------------------------------------

    def invalidate(self, user_id: UserId) -> None:
        """Forget the cached answer for `user_id`; the next lookup asks auth-service
        (unless the local replica knows the id: its answers are not a cache)."""
        key = self._text_ids.get(user_id)
        self._cache.discard(key)
        if self._batcher is not None:
            self._batcher.forget(key)

    def mark_deleted(self, user_id: UserId) -> None:
        """Record that `user_id` was deleted (call it from the `user_deleted`
        consumer): from now on it "does not exist", without asking."""
        key = self._text_ids.get(user_id)
        if self._batcher is not None:
            self._batcher.forget(key)
        self._cache.put(key, DELETED)
        if self._replica is not None:
            self._replica.mark_deleted(key)

    def stats(self) -> ClientStats:
        """A snapshot of this client's counters, cache size and breaker."""
        breaker = self._breaker
        return self._counters.snapshot(len(self._cache), breaker.state, breaker.opened_count)

    def replica_stats(self) -> ReplicaStats | None:
        """A snapshot of the local replica (None without one)."""
        return None if self._replica is None else self._replica.stats()
