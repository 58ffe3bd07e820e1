"""A local replica of every user's state (`ReplicaConfig`): loaded from a snapshot
(ExportUserStates) and kept by the `user_created` / `user_deleted` events.

    load:   the brokers' end offsets  ->  the export (one snapshot, at position P)
            ->  answer from memory, follow the events from those offsets
    follow: apply each change (states only move forward); positions P+1, P+2, ...
            must all arrive; the brokers are asked for their end offsets every
            `check_interval`
    reload: a position missing for `gap_timeout`, the brokers unanswered for
            `stale_after`, fewer events on the brokers than were read, a stream
            error: stop answering ACTIVE, load again (with backoff, until the
            brokers and auth-service answer), answer again once loaded

What the replica answers (`exists`, `state`): ACTIVE only while trusted (loaded and
following); DELETED always (final: ids are never reused); never NOT_FOUND: an id
it does not know may have been created a moment ago, so it is asked of
auth-service (whose NOT_FOUND comes from the primary). None means "ask".

Over `max_users`, a load stops, says so once (error) and the replica stays off:
the client answers through RPCs. Lifecycle: new -> running -> closed; `start()`
loads (ReplicaLoadError when it cannot, within `load_timeout`), then a task
follows and reloads until `aclose()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from auth_client._errors import AuthClientError, ReplicaLoadError
from auth_client._replica_states import ReplicaStates
from auth_client.backoff import Backoff
from auth_client.contract import UserState, read_export_page

if TYPE_CHECKING:
    import uuid
    from collections.abc import AsyncGenerator, Callable

    from auth_client._config import ReplicaConfig
    from auth_client._replica_stream import Change, EventStream
    from auth_client.contract import replication_pb2

    Export = Callable[[int, float], AsyncGenerator[replication_pb2.ExportUserStatesResponse, None]]

log = logging.getLogger("auth_client.replica")

_ACTIVE = UserState.ACTIVE
# Longest wait of one fetch: the follow loop checks its clocks at least this often.
_FETCH_MS = 200


class ReplicaState(enum.Enum):
    """What the replica does now."""

    NEW = "new"
    LOADING = "loading"  # the first load, or a reload (ACTIVE is asked of auth-service)
    FOLLOWING = "following"  # answering from memory
    OFF = "off"  # over max_users: every answer is auth-service's
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class ReplicaStats:
    """A snapshot of a replica (`AuthClient.replica_stats()`)."""

    state: str
    """"loading", "following", "off" (over `max_users`) or "closed"."""
    answering: bool
    """Whether ACTIVE answers come from memory now (loaded, following, and the
    brokers answering); DELETED always does."""
    users: int
    """Users held (active and deleted)."""
    deleted: int
    position: int
    """Every event up to this position is applied (the export's, then the events')."""
    loads: int
    """Loads that finished (the first one included)."""
    reloads: int
    """Reloads started: a gap, a lost stream, lost events or a stream error."""
    last_reload_reason: str | None
    last_load_s: float
    """How long the last load took (offsets, export and install)."""
    bytes: int
    """Memory of the id arrays (17 bytes per user plus the arrays' slack)."""
    events: int
    """Events applied (duplicates and late ones included)."""
    skipped: int
    """Messages that were not valid events (skipped; their positions count as missing)."""


class _Reload(Exception):  # noqa: N818 - a control-flow signal, not an error
    """The follow loop's reason to load again."""


class _TooMany(Exception):  # noqa: N818
    pass


class Positions:
    """Which event positions arrived: every one up to `applied`, and some beyond it
    (`ahead`). A hole (applied + 1 missing while a later one arrived) that lasts
    `gap_timeout` is a gap."""

    __slots__ = ("ahead", "applied", "hole_since")

    def __init__(self, start: int) -> None:
        self.applied = start
        self.ahead: set[int] = set()
        self.hole_since: float | None = None

    def saw(self, position: int, now: float) -> None:
        if position <= self.applied:
            return  # in the snapshot, or a redelivery
        self.ahead.add(position)
        moved = False
        while self.applied + 1 in self.ahead:
            self.applied += 1
            self.ahead.discard(self.applied)
            moved = True
        if not self.ahead:
            self.hole_since = None
        elif moved or self.hole_since is None:
            self.hole_since = now

    def missing_for(self, now: float) -> float:
        return 0.0 if self.hole_since is None else now - self.hole_since


class Replica:
    """One client's replica. `exists` / `state` may be called from any thread."""

    def __init__(
        self,
        config: ReplicaConfig,
        export: Export,
        *,
        name: str,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self._export = export
        self._name = name
        self._clock = clock
        self._states: ReplicaStates | None = None
        self.trusted = False  # ACTIVE answers allowed (loaded and following)
        self.state = ReplicaState.NEW
        self._positions = Positions(0)
        self._stream: EventStream | None = None
        self._task: asyncio.Task[None] | None = None
        self.loads = 0
        self.reloads = 0
        self.events = 0
        self.last_reload_reason: str | None = None
        self.last_load_s = 0.0
        self._skipped_before = 0

    # -- answers (any thread) ------------------------------------------------

    def exists(self, key: uuid.UUID) -> bool | None:
        """True (ACTIVE, while trusted), False (DELETED), None: ask auth-service."""
        states = self._states
        if states is None:
            return None
        state = states.get(key)
        if state is None:
            return None
        if state is _ACTIVE:
            return True if self.trusted else None
        return False

    def state_of(self, key: uuid.UUID) -> UserState | None:
        """ACTIVE (while trusted) or DELETED; None: ask auth-service."""
        answer = self.exists(key)
        if answer is None:
            return None
        return _ACTIVE if answer else UserState.DELETED

    def mark_deleted(self, key: uuid.UUID) -> None:
        """A deletion heard elsewhere (the client's `mark_deleted`): final anyway."""
        if self._states is not None:
            self._states.deleted(key)

    # -- lifecycle -----------------------------------------------------------

    async def start(self) -> None:
        """Load within `load_timeout`, then follow in a task. ReplicaLoadError when
        the first load fails; over `max_users` the replica is off (said once)."""
        if self.state is not ReplicaState.NEW:
            raise RuntimeError(f"cannot start a replica that is {self.state.value}")
        self.state = ReplicaState.LOADING
        try:
            await self._load()
        except ReplicaLoadError:
            await self.aclose()
            raise
        if self.state is ReplicaState.FOLLOWING:
            self._task = asyncio.create_task(self._run(), name=f"auth-client-replica-{self._name}")

    async def aclose(self) -> None:
        """Stop following and forget every state. Idempotent."""
        self.state = ReplicaState.CLOSED
        self.trusted = False
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._close_stream()
        self._states = None

    async def _close_stream(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            self._skipped_before += stream.skipped
            await stream.aclose()

    def stats(self) -> ReplicaStats:
        states = self._states
        stream = self._stream
        return ReplicaStats(
            state=self.state.value,
            answering=self.trusted,
            users=len(states) if states is not None else 0,
            deleted=states.deleted_count if states is not None else 0,
            position=self._positions.applied,
            loads=self.loads,
            reloads=self.reloads,
            last_reload_reason=self.last_reload_reason,
            last_load_s=self.last_load_s,
            bytes=states.nbytes() if states is not None else 0,
            events=self.events,
            skipped=self._skipped_before + (stream.skipped if stream is not None else 0),
        )

    # -- loading -------------------------------------------------------------

    async def _load(self) -> None:
        """One load: the brokers' end offsets, then the export; installed when both
        are done. ReplicaLoadError when it fails; over max_users: off."""
        from auth_client._replica_stream import EventStream, StreamError  # noqa: PLC0415 - extra

        config = self.config
        started = self._clock()
        stream = EventStream(config, client_id=f"auth-client-replica-{self._name}")
        try:
            async with asyncio.timeout(config.load_timeout):
                await stream.open()
                states, position = await self._read_export(config.load_timeout)
        except BaseException as exc:
            await stream.aclose()
            if isinstance(exc, _TooMany):
                self._turn_off(str(exc))
                return
            if isinstance(exc, ReplicaLoadError):
                raise
            if isinstance(exc, StreamError):
                raise ReplicaLoadError(f"replica {self._name!r}: {exc}") from exc
            if isinstance(exc, TimeoutError):
                raise ReplicaLoadError(
                    f"replica {self._name!r}: not loaded within load_timeout"
                    f" ({config.load_timeout:g}s)"
                ) from exc
            if isinstance(exc, AuthClientError):
                raise ReplicaLoadError(
                    f"replica {self._name!r}: ExportUserStates failed: {exc}"
                ) from exc
            raise
        await self._close_stream()
        self._stream = stream
        self._states = states
        self._positions = Positions(position)
        self.loads += 1
        self.last_load_s = self._clock() - started
        self.state = ReplicaState.FOLLOWING
        self.trusted = True
        log.info(
            "auth_client replica %r: loaded %d users at event position %d in %.2fs",
            self._name,
            len(states),
            position,
            self.last_load_s,
        )

    async def _read_export(self, timeout: float) -> tuple[ReplicaStates, int]:
        states = ReplicaStates()
        position: int | None = None
        pages = self._export(self.config.page_size, timeout)
        async with contextlib.aclosing(pages):
            async for page in pages:
                position = self._add_page(states, page, position)
        if position is None:
            raise ReplicaLoadError("ExportUserStates sent no page")
        return states, position

    def _add_page(
        self,
        states: ReplicaStates,
        page: replication_pb2.ExportUserStatesResponse,
        position: int | None,
    ) -> int:
        """Add one export page; the export's position."""
        max_users = self.config.max_users
        try:
            ids, deleted = read_export_page(page)
        except ValueError as exc:
            raise ReplicaLoadError(f"ExportUserStates sent a malformed page: {exc}") from exc
        if position is not None and page.position != position:
            raise ReplicaLoadError("ExportUserStates changed its position mid-export")
        if len(states) + len(deleted) > max_users:
            raise _TooMany(
                f"auth-service holds more than max_users ({max_users:,}) users;"
                " the replica is off and every lookup asks auth-service"
                " (raise ReplicaConfig.max_users if the memory is there:"
                " about 17 bytes a user)"
            )
        try:
            states.extend(ids, deleted)
        except ValueError as exc:
            raise ReplicaLoadError(f"ExportUserStates sent a malformed page: {exc}") from exc
        return page.position

    def _turn_off(self, why: str) -> None:
        self.state = ReplicaState.OFF
        self.trusted = False
        self._states = None
        log.error("auth_client replica %r: %s", self._name, why)

    # -- following -----------------------------------------------------------

    async def _run(self) -> None:
        """Follow; on a reason to reload, stop answering ACTIVE and load again until
        it works (backoff), then follow again."""
        backoff = Backoff(0.2, self.config.max_backoff)
        while self.state is ReplicaState.FOLLOWING:
            try:
                await self._follow()
            except _Reload as reason:
                self._begin_reload(str(reason))
            except (Exception, asyncio.CancelledError) as exc:
                _unless_cancelled(exc)  # a bug: reload rather than answer from stale state
                log.exception("auth_client replica %r: unexpected error", self._name)
                self._begin_reload(f"unexpected error ({type(exc).__name__})")
            await self._close_stream()
            failures = 0
            while self._loading():
                try:
                    await self._load()
                except (Exception, asyncio.CancelledError) as exc:
                    _unless_cancelled(exc)
                    failures += 1
                    log.log(
                        logging.WARNING if failures == 1 else logging.DEBUG,
                        "auth_client replica %r: reload failed: %s; trying again",
                        self._name,
                        exc,
                        exc_info=not isinstance(exc, ReplicaLoadError),
                    )
                    await asyncio.sleep(backoff.next())
                else:
                    backoff.reset()

    def _loading(self) -> bool:
        return self.state is ReplicaState.LOADING

    def _begin_reload(self, reason: str) -> None:
        self.trusted = False
        self.state = ReplicaState.LOADING
        self.reloads += 1
        self.last_reload_reason = reason
        log.warning(
            "auth_client replica %r: %s; reloading (lookups ask auth-service meanwhile)",
            self._name,
            reason,
        )

    async def _follow(self) -> None:
        """Apply events until there is a reason to reload (raised as _Reload)."""
        stream = self._stream
        assert stream is not None
        config = self.config
        clock = self._clock
        contact = _Contact(clock())
        fetch_ms = min(_FETCH_MS, int(config.check_interval * 1000))
        while True:
            try:
                changes = await stream.changes(fetch_ms)
            except Exception as exc:
                raise _Reload(f"the event stream failed ({type(exc).__name__}: {exc})") from exc
            now = clock()
            self._apply(changes, now)
            missing = self._positions.missing_for(now)
            if missing > config.gap_timeout:
                raise _Reload(
                    f"event position {self._positions.applied + 1} has been missing for"
                    f" {missing:.1f}s while later ones arrived (a gap in the events)"
                )
            if now >= contact.next_check:
                contact.next_check = now + config.check_interval
                await self._check_brokers(stream, contact)

    def _apply(self, changes: list[Change], now: float) -> None:
        states = self._states
        assert states is not None
        positions = self._positions
        for change in changes:
            if change.deleted:
                states.deleted(change.user_id)
            else:
                states.created(change.user_id)
            if change.position:
                positions.saw(change.position, now)
        self.events += len(changes)

    async def _check_brokers(self, stream: EventStream, contact: _Contact) -> None:
        """Ask the brokers for their end offsets: silent for `stale_after`, or
        holding fewer events than were read: reload."""
        ends = await stream.ends(self.config.check_interval)
        if ends is None:  # no answer (yet), or a failure
            silent = self._clock() - contact.last
            if silent > self.config.stale_after:
                raise _Reload(f"no answer from Kafka for {silent:.1f}s")
            return
        contact.last = self._clock()
        behind = stream.lost_events(ends)
        if behind is not None:
            raise _Reload(
                f"Kafka holds fewer events in {behind.topic}[{behind.partition}] than were"
                " read (a broker restarted empty, or the topic was recreated)"
            )


def _unless_cancelled(exc: BaseException) -> None:
    """Re-raise a CancelledError meant for this task (aclose); aiokafka can raise the
    CancelledError of a request it cancelled itself, which is only a failure."""
    task = asyncio.current_task()
    if isinstance(exc, asyncio.CancelledError) and (task is None or task.cancelling()):
        raise exc


class _Contact:
    """When the brokers last answered, and when to ask them next."""

    __slots__ = ("last", "next_check")

    def __init__(self, now: float) -> None:
        self.last = now
        self.next_check = now


__all__ = ["Positions", "Replica", "ReplicaState", "ReplicaStats"]
