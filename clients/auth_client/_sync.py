"""`SyncAuthClient`: `AuthClient` for code without an event loop (Django, Flask,
Celery, scripts), shared by every thread of a process.

One implementation: the client runs an `AuthClient` in one event-loop thread of its
own (`_loop_thread.py`), over grpc's synchronous channel (`_bridge.py`), so the
cache, coalescing and batching (across threads: every miss of every thread joins the
same batcher), breaker, fallback policy, rollout modes, deadlines, stats and spans
are `AuthClient`'s. A lookup from any thread is submitted to that loop in a copy of
the caller's `contextvars` context and waited for. Only the cache-hit path differs:
it runs in the caller's thread (one dict lookup and a lock-guarded counter, no hop
to the loop) while `AuthClient` would take it too (ENFORCE, not tracing); so does
a local replica's answer (`replica=`: loaded and followed in the loop thread, read
without a lock from any thread, see `_replica_states.py`).

Lifecycle: NEW until the first call (or `start()` / `with`): no thread and no channel
yet, so a client made at import time in a pre-fork server's parent is usable in each
child. OPEN: the thread and channel exist. A fork marks every OPEN client FORKED in
the child, where any call raises a RuntimeError saying to create a new client (no
hang: nothing of the parent's thread or channel is touched). `close()` is
idempotent, joins the thread and closes an owned channel; CLOSED cannot reopen.
Clients still open at interpreter exit are closed by an atexit hook.

The FAIL_OPEN hook runs in the loop's executor thread (`asyncio.to_thread`, in the
caller's context), so a slow hook never holds up other threads' lookups; breaker
listeners run in the loop thread and must not call the client.
"""

from __future__ import annotations

import asyncio
import atexit
import dataclasses
import enum
import os
import threading
import uuid
import warnings
import weakref
from collections.abc import Callable, Coroutine, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Self, TypeVar, cast

from auth_client._bridge import SyncChannelBridge
from auth_client._client import AuthClient, OnUnverified
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
from auth_client._errors import UserNotFoundError
from auth_client._loop_thread import LoopClosedError, LoopThread
from auth_client._metrics import ClientStats, register, unregister
from auth_client._transport import create_sync_channel

if TYPE_CHECKING:
    from types import TracebackType

    import grpc

    from auth_client._breaker import StateListener
    from auth_client._models import User, UserId, UserState
    from auth_client._replica import ReplicaStats

T = TypeVar("T")
_UUID = uuid.UUID


class _State(enum.Enum):
    NEW = "new"
    OPEN = "open"
    FORKED = "forked"
    CLOSED = "closed"


_OPEN = _State.OPEN
_clients: weakref.WeakSet[SyncAuthClient] = weakref.WeakSet()


class SyncAuthClient:
    """Validates user ids against auth-service, from any thread, without an event
    loop. Use as `with SyncAuthClient(...) as auth:` or call `close()`.

    Takes the same arguments as `AuthClient`, except that `channel=` is a
    synchronous `grpc.Channel` and `interceptors=` are synchronous
    `grpc.UnaryUnaryClientInterceptor`s. One client per process, shared by all its
    threads; after a fork, the child makes its own (docs/client.md). With
    `replica=`, the replica loads when the client opens (`with`, `start()` or the
    first call), which raises `ReplicaLoadError` when it cannot.
    """

    def __init__(
        self,
        target: str | None = None,
        *,
        channel: grpc.Channel | None = None,
        token: str | None = None,
        tls: TLSConfig | None = None,
        timeout: float = 0.5,
        cache: CacheConfig | None = None,
        breaker: BreakerConfig | None = None,
        batching: BatchConfig | None = None,
        channel_config: ChannelConfig | None = None,
        interceptors: Sequence[grpc.UnaryUnaryClientInterceptor[Any, Any]] = (),
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
        self._target = target
        self._channel = channel
        self._owns_channel = channel is None
        self._tls = tls
        self._channel_config = channel_config
        self._interceptors = tuple(interceptors)
        self._bridge = SyncChannelBridge()
        hook = None if on_unverified is None else _in_executor(on_unverified)
        self._client = AuthClient(
            channel=cast("grpc.aio.Channel", self._bridge),
            token=token,
            timeout=timeout,
            cache=cache,
            breaker=breaker,
            batching=batching,
            channel_config=channel_config,
            fallback=fallback,
            rollout=rollout,
            on_unverified=hook,
            on_breaker_change=on_breaker_change,
            name=name,
            replica=replica,
        )
        # The caller-thread cache-hit path reads AuthClient's cache (and replica)
        # directly.
        self._cache = self._client._cache
        self._entries = self._cache.entries
        self._text_ids = self._client._text_ids
        self._replica = self._client._replica
        self._lock = threading.Lock()
        self._hits = 0  # cache hits answered in the callers' threads
        self._replica_hits = 0  # replica answers given in the callers' threads
        self._thread: LoopThread | None = None
        self._pid = os.getpid()
        self._state = _State.NEW
        _clients.add(self)

    # -- lifecycle ---------------------------------------------------------

    @property
    def name(self) -> str:
        return self._client.name

    def _open(self) -> LoopThread:
        """The loop thread, started on first use; raises if closed or forked."""
        with self._lock:
            state = self._state
            if state is _State.NEW:
                self._start()
            elif state is _State.CLOSED:
                raise RuntimeError("SyncAuthClient is closed; create a new one")
            elif state is _State.FORKED:
                raise RuntimeError(
                    f"SyncAuthClient {self.name!r} was opened in process {self._pid} and "
                    f"cannot be used in process {os.getpid()} (forked from it): its thread "
                    "and gRPC channel do not survive fork(). Create a new SyncAuthClient in "
                    "the child (gunicorn post_fork, Celery worker_process_init); see "
                    "docs/client.md"
                )
            assert self._thread is not None
            return self._thread

    def _start(self) -> None:
        if self._channel is None:
            assert self._target is not None
            self._channel = create_sync_channel(
                self._target,
                tls=self._tls,
                config=self._channel_config,
                interceptors=self._interceptors,
            )
        self._bridge.attach(self._channel)
        thread = LoopThread(f"auth-client-{self.name}")
        try:
            thread.submit(self._client.start).result()
        except BaseException:
            # The AuthClient closed itself (a replica that cannot load): so is this.
            thread.stop(self._client.aclose)
            self._state = _State.CLOSED
            unregister(self)
            if self._owns_channel:
                self._channel.close()
            raise
        # Exported as this client: its stats include the callers' cache hits.
        unregister(self._client)
        register(self)
        self._thread = thread
        self._pid = os.getpid()
        self._state = _OPEN

    def start(self) -> None:
        """Start the thread, create the channel and load the replica, if any (done
        by `with` and by the first call). A replica that cannot be loaded raises
        `ReplicaLoadError` and leaves the client closed."""
        self._open()

    def close(self) -> None:
        """Fail pending lookups, cancel in-flight RPCs, stop and join the thread,
        close an owned channel. Idempotent; a closed client cannot be reused. Not
        from a breaker listener (the client's own thread)."""
        with self._lock:
            state, thread = self._state, self._thread
            if state is _State.CLOSED:
                return
            if thread is not None and threading.get_ident() == thread.ident:
                raise RuntimeError("SyncAuthClient cannot be closed from its own thread")
            self._state = _State.CLOSED
            self._thread = None
        unregister(self)
        if state is not _OPEN:  # NEW: nothing started; FORKED: the parent's, untouched
            return
        assert thread is not None
        try:
            thread.stop(self._client.aclose)
        finally:
            if self._owns_channel and self._channel is not None:
                self._channel.close()

    def __enter__(self) -> Self:
        self._open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __del__(self, _warn: Callable[..., None] = warnings.warn) -> None:
        thread = getattr(self, "_thread", None)
        if getattr(self, "_state", None) is _OPEN and thread is not None:
            _warn(f"unclosed {self!r}", ResourceWarning, stacklevel=1)
            thread.abandon()

    def __repr__(self) -> str:
        where = self._target if self._target is not None else "<channel>"
        return f"SyncAuthClient({where!r}, name={self.name!r}, state={self._state.value})"

    def _forked(self) -> None:
        """In a child process just forked: nothing of the parent's is usable."""
        self._lock = threading.Lock()  # may have been held by a parent thread
        if self._state is _OPEN:
            self._state = _State.FORKED
            self._thread = None

    # -- calls -------------------------------------------------------------

    def _run(self, fn: Callable[..., Coroutine[Any, Any, T]], /, *args: Any, **kwargs: Any) -> T:
        """Run AuthClient's `fn(...)` in the loop thread and wait for its outcome."""
        thread = self._thread if self._state is _OPEN else self._open()
        if thread is None:  # closed meanwhile by another thread
            thread = self._open()
        if threading.get_ident() == thread.ident:
            raise RuntimeError(
                "SyncAuthClient called from its own thread (a breaker listener?): "
                "it would wait for itself"
            )
        try:
            future = thread.submit(fn, *args, **kwargs)
        except LoopClosedError:
            raise RuntimeError("SyncAuthClient is closed; create a new one") from None
        return future.result()

    def user_exists(
        self,
        user_id: UserId,
        *,
        timeout: float | None = None,
        fallback: FallbackPolicy | None = None,
    ) -> bool:
        """Whether the user exists and is not deleted."""
        if self._state is not _OPEN:
            self._open()
        key = user_id if isinstance(user_id, _UUID) else self._text_ids.get(user_id)
        replica = self._replica
        if replica is not None and self._client._fast:
            known = replica.exists(key)
            if known is not None:
                with self._lock:
                    self._replica_hits += 1
                return known
        entry = self._entries.get(key)
        if entry is not None and self._client._fast and entry[1] > self._cache.clock():
            with self._lock:
                self._hits += 1
            try:  # noqa: SIM105 - free on the hot path; suppress() is not
                # recency; the loop thread may have evicted it meanwhile
                self._entries.move_to_end(key)
            except (KeyError, RuntimeError):
                pass
            return entry[0]
        return self._run(self._client.user_exists, key, timeout=timeout, fallback=fallback)

    def users_exist(
        self,
        user_ids: Iterable[UserId],
        *,
        timeout: float | None = None,
        fallback: FallbackPolicy | None = None,
    ) -> dict[uuid.UUID, bool]:
        """Existence of each id (any number; sent in RPCs of at most 1000 ids)."""
        if not isinstance(user_ids, str | uuid.UUID):
            user_ids = list(user_ids)  # an iterator is consumed in the caller's thread
        return self._run(self._client.users_exist, user_ids, timeout=timeout, fallback=fallback)

    def require_user(
        self,
        user_id: UserId,
        *,
        timeout: float | None = None,
        fallback: FallbackPolicy | None = None,
    ) -> None:
        """Return if the user exists, else raise `UserNotFoundError`."""
        if self._state is not _OPEN:
            self._open()
        key = user_id if isinstance(user_id, _UUID) else self._text_ids.get(user_id)
        if not self.user_exists(key, timeout=timeout, fallback=fallback):
            raise UserNotFoundError((key,))

    def require_users(
        self,
        user_ids: Iterable[UserId],
        *,
        timeout: float | None = None,
        fallback: FallbackPolicy | None = None,
    ) -> None:
        """Return if every user exists, else raise `UserNotFoundError` naming the
        missing ones."""
        answers = self.users_exist(user_ids, timeout=timeout, fallback=fallback)
        missing = [key for key, exists in answers.items() if not exists]
        if missing:
            raise UserNotFoundError(missing)

    def get_user(self, user_id: UserId, *, timeout: float | None = None) -> User | None:
        """The public profile of an active user, or None (`AuthClient.get_user`)."""
        return self._run(self._client.get_user, user_id, timeout=timeout)

    def user_states(
        self, user_ids: Iterable[UserId], *, timeout: float | None = None
    ) -> dict[uuid.UUID, UserState]:
        """Each id's state straight from auth-service (`AuthClient.user_states`)."""
        if not isinstance(user_ids, str | uuid.UUID):
            user_ids = list(user_ids)
        return self._run(self._client.user_states, user_ids, timeout=timeout)

    # -- cache control -----------------------------------------------------

    def invalidate(self, user_id: UserId) -> None:
        """Forget the cached answer for `user_id`; the next lookup asks auth-service."""
        key = self._text_ids.get(user_id)
        self._run(_call_in_loop, self._client.invalidate, key)

    def mark_deleted(self, user_id: UserId) -> None:
        """Record that `user_id` was deleted: from now on it "does not exist"."""
        key = self._text_ids.get(user_id)
        self._run(_call_in_loop, self._client.mark_deleted, key)

    def stats(self) -> ClientStats:
        """A snapshot of this client's counters, cache size and breaker."""
        stats = self._client.stats()
        with self._lock:
            hits, replica_hits = self._hits, self._replica_hits
        return dataclasses.replace(
            stats,
            cache_hits=stats.cache_hits + hits,
            replica_hits=stats.replica_hits + replica_hits,
        )

    def replica_stats(self) -> ReplicaStats | None:
        """A snapshot of the local replica (None without one)."""
        return self._client.replica_stats()


def _in_executor(hook: OnUnverified) -> OnUnverified:
    """The FAIL_OPEN hook, run in the loop's executor thread in the caller's context
    (the loop thread keeps serving other threads' lookups meanwhile)."""

    async def call(user_ids: tuple[uuid.UUID, ...]) -> object:
        return await asyncio.to_thread(hook, user_ids)

    return call


async def _call_in_loop(fn: Callable[[uuid.UUID], None], key: uuid.UUID) -> None:
    fn(key)


def _after_fork_in_child() -> None:
    for client in list(_clients):
        client._forked()


def _close_all_at_exit() -> None:
    pid = os.getpid()
    for client in list(_clients):
        if client._state is _OPEN and client._pid == pid:
            client.close()


os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(_close_all_at_exit)


__all__ = ["SyncAuthClient"]
