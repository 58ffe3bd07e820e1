"""Read replicas (DATABASE_READ_URL): which hot standby a lookup may read now.

Each replica has a pool of its own. A monitor samples, four times per `max_lag_s`,
the primary's WAL position (`pg_current_wal_lsn()`) and then each replica's replay
position (`pg_last_wal_replay_lsn()`). A replica's lag is how long ago the primary
was where the replica is now: 0 when it has replayed the primary's position of
this round, else the age of the newest earlier sample at or below its position. A
replica is read while it answers and lags at most `max_lag_s`; otherwise lookups go
to the primary. Every change of a replica's state is logged once (WARNING when it
stops being read, INFO when it is read again).

A replica is never asked whether a user is NOT_FOUND in the end: the lookups ask
the primary about every id a replica does not know (store/lookup.py), so a replica
can only be stale in the ACTIVE direction, for at most its lag.

Each check also says up to when a replica is known complete (`fresh_as_of`): the
time of the newest primary sample at or below its replay position. Every commit
the primary made before that moment is replayed there, so an answer read from it
afterwards is not older than any change announced before that moment (the state
cache keeps a replica's answer on that condition, store/state_cache.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Sequence

import asyncpg

from auth_service.lifecycle import Owner, cancel
from auth_service.store.connection import reason, where
from auth_service.store.status import DatabaseStatus

log = logging.getLogger(__name__)

# Bytes of WAL since 0/0: comparable positions as plain integers.
_PRIMARY_POSITION = "SELECT (pg_current_wal_insert_lsn() - '0/0'::pg_lsn)::bigint"
_REPLAY_POSITION = """
SELECT (CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn()
             ELSE pg_current_wal_lsn() END - '0/0'::pg_lsn)::bigint
"""
# How long the primary's positions are kept to measure lags with.
_HISTORY_S = 120.0


class ReplicaState(enum.Enum):
    STARTING = "starting"  # not checked yet: not read
    UP = "up"  # answering and within the lag bound: read
    LAGGING = "lagging"  # answering, but further behind than the bound
    DOWN = "down"  # not answering


class Replica:
    """One read replica: its pool, state and lag, and how often it was read."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.name = where(url).removeprefix("PostgreSQL at ")
        self.pool: asyncpg.Pool | None = None
        # Its own counters: a slow replica must not mark the primary stalled.
        self.status = DatabaseStatus(stall_s=0)
        self.state = ReplicaState.STARTING
        self.lag_s: float | None = None  # None until measured
        # Every commit the primary had made at this time (the monitor's clock) is
        # replayed here, as last checked; -inf until known.
        self.fresh_as_of = -math.inf
        self.reads = 0  # queries answered by it
        self.why = "not checked yet"

    @property
    def readable(self) -> bool:
        return self.state is ReplicaState.UP and self.pool is not None


class ReadReplicas(Owner):
    """The read replicas of one server: `pick()` one to read (None: read the
    primary), `failed()` when a read on it could not be answered. An async context
    manager; the pools open lazily (a replica that is down does not stop start-up)."""

    def __init__(
        self,
        urls: Sequence[str],
        primary: asyncpg.Pool,
        *,
        max_lag_s: float,
        pool_max_size: int,
        connect_timeout_s: float,
        statement_timeout_ms: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__("the read replicas")
        self.replicas = [Replica(url) for url in urls]
        self.max_lag_s = max_lag_s
        self.interval_s = max(0.05, max_lag_s / 4)
        self._primary = primary
        self._pool_max_size = pool_max_size
        self._connect_timeout_s = connect_timeout_s
        self._statement_timeout_ms = statement_timeout_ms
        self._clock = clock
        self._samples: deque[tuple[float, int]] = deque()  # (time, primary position)
        self._next = 0
        self._monitor: asyncio.Task[None] | None = None
        self.checks = 0  # monitor rounds completed

    # -- reading ----------------------------------------------------------------

    def pick(self) -> Replica | None:
        """The next readable replica (round robin), or None: read the primary."""
        replicas = self.replicas
        count = len(replicas)
        for step in range(count):
            replica = replicas[(self._next + step) % count]
            if replica.readable:
                self._next = (self._next + step + 1) % count
                return replica
        return None

    def failed(self, replica: Replica, exc: BaseException) -> None:
        """A read on `replica` got no answer: not read until a check finds it well."""
        self._set(replica, ReplicaState.DOWN, reason(exc))

    async def caught_up(self, timeout: float) -> Replica | None:
        """A readable replica that has replayed everything the primary had written
        when this was called (an index load's snapshot must be no older than its
        start), waiting at most `timeout`; None: read the primary."""
        try:
            target = await self._primary_position()
        except Exception:  # the primary's own load will say what is wrong
            return None
        deadline = self._clock() + timeout
        while True:
            for replica in self.replicas:
                if replica.readable and (await self._position(replica) or -1) >= target:
                    return replica
            if self._clock() >= deadline:
                return None
            await asyncio.sleep(0.05)

    # -- the monitor ------------------------------------------------------------

    async def check(self) -> None:
        """One round: the primary's position, then each replica's state and lag."""
        now = self._clock()
        with contextlib.suppress(Exception):  # primary down: lags against what we saw
            self._samples.append((now, await self._primary_position()))
        while self._samples and now - self._samples[0][0] > _HISTORY_S:
            self._samples.popleft()
        await asyncio.gather(*(self._check(replica, now) for replica in self.replicas))
        self.checks += 1

    async def _check(self, replica: Replica, now: float) -> None:
        try:
            position = await self._position(replica)
        except Exception as exc:
            self._set(replica, ReplicaState.DOWN, reason(exc))
            return
        if position is None:
            self._set(replica, ReplicaState.DOWN, "it replays no WAL yet")
            return
        lag = replica.lag_s = self.lag(position, now)
        replica.fresh_as_of = self.fresh_as_of(position)
        if lag > self.max_lag_s:
            self._set(
                replica,
                ReplicaState.LAGGING,
                f"{lag:.1f}s behind the primary"
                f" (DATABASE_READ_MAX_LAG_MS={round(self.max_lag_s * 1000)})",
            )
        else:
            self._set(replica, ReplicaState.UP, f"{lag:.2f}s behind the primary")

    def lag(self, position: int, now: float) -> float:
        """How long ago the primary was at `position` (0: at or past its last known
        position)."""
        samples = self._samples
        if not samples or position >= samples[-1][1]:
            return 0.0
        at = self.fresh_as_of(position)
        if at == -math.inf:  # older than the history: at least this far behind
            at = samples[0][0]
        return now - at

    def fresh_as_of(self, position: int) -> float:
        """The time of the newest primary sample at or below `position`: a replica
        that has replayed `position` has every commit made before it (-inf: none)."""
        for at, primary in reversed(self._samples):
            if primary <= position:
                return at
        return -math.inf

    def _set(self, replica: Replica, state: ReplicaState, why: str) -> None:
        before, replica.state, replica.why = replica.state, state, why
        if state is before:
            return
        if state is ReplicaState.UP:
            log.info("read replica %s: read (%s)", replica.name, why)
        else:
            log.warning(
                "read replica %s not read: %s; lookups go to the primary meanwhile",
                replica.name,
                why,
            )

    async def _primary_position(self) -> int:
        async with self._primary.acquire(timeout=self._connect_timeout_s) as conn:
            position: int = await conn.fetchval(_PRIMARY_POSITION, timeout=self.interval_s * 4)
        return position

    async def _position(self, replica: Replica) -> int | None:
        assert replica.pool is not None
        async with replica.pool.acquire(timeout=self._connect_timeout_s) as conn:
            position: int | None = await conn.fetchval(
                _REPLAY_POSITION, timeout=self.interval_s * 4
            )
        return position

    async def _watch(self) -> None:
        while True:
            await self.check()
            await asyncio.sleep(self.interval_s)

    async def _start(self) -> None:
        for replica in self.replicas:
            replica.pool = await asyncpg.create_pool(
                replica.url,
                min_size=0,
                max_size=self._pool_max_size,
                max_inactive_connection_lifetime=300.0,
                timeout=self._connect_timeout_s,
                command_timeout=self._statement_timeout_ms / 1000,
                server_settings={
                    "application_name": "auth-service-read",
                    "statement_timeout": str(self._statement_timeout_ms),
                },
            )
        self._monitor = asyncio.get_running_loop().create_task(self._watch(), name="read-replicas")

    async def _close(self) -> None:
        await cancel(self._monitor)
        for replica in self.replicas:
            pool, replica.pool = replica.pool, None
            if pool is None:
                continue
            try:
                await asyncio.wait_for(pool.close(), timeout=2.0)
            except Exception:
                pool.terminate()
