"""The outbox relay: publishes committed outbox rows to Kafka, at least once.

    woken by NOTIFY (or every poll interval) -> claim a batch (FOR UPDATE SKIP LOCKED)
    -> publish with acks="all" and wait for the acknowledgements -> mark published
    -> commit

Runs inside `auth-service serve` (RELAY_ENABLED, the default) and standalone as
`auth-service relay`; any number of relays may share one outbox. A relay that dies
between publish and mark leaves its rows unpublished (its transaction rolls back),
so they are sent again: consumers deduplicate on the `event-id` header.

While Kafka (or PostgreSQL) is down the rows stay in the outbox and the relay
retries with capped exponential backoff plus jitter; it drains them once the broker
answers again. NOTIFY is only a wake-up hint: the LISTEN connection is checked and
re-established, and the relay polls anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Self

import asyncpg
from prometheus_client import Counter, Gauge

from auth_client.backoff import Backoff
from auth_service import tracing
from auth_service.events.publisher import Publisher, PublishError
from auth_service.events.relay_config import RelayConfig
from auth_service.notices import RepeatingNotice
from auth_service.signals import wait_for_shutdown_signal
from auth_service.store.connection import describe
from auth_service.store.listen import Listener
from auth_service.store.outbox import NOTIFY_CHANNEL, Lag, OutboxRecord, OutboxStore

if TYPE_CHECKING:
    from types import TracebackType

    from auth_service.config import Settings

log = logging.getLogger(__name__)

LISTEN_APPLICATION_NAME = "auth-service-relay-listen"

OUTBOX_UNPUBLISHED = Gauge("outbox_unpublished_rows", "Outbox rows not yet published to Kafka")
OUTBOX_OLDEST_AGE = Gauge(
    "outbox_oldest_unpublished_age_seconds", "Age of the oldest unpublished outbox row"
)
EVENTS_PUBLISHED = Counter(
    "outbox_events_published", "Outbox events acknowledged by Kafka and marked published"
)
EVENTS_FAILED = Counter(
    "outbox_events_failed", "Outbox event publish attempts that failed (the row is retried)"
)
ROWS_PRUNED = Counter("outbox_rows_pruned", "Published outbox rows deleted after the retention")

OnPublished = Callable[[Sequence[OutboxRecord]], Awaitable[None]]


class Relay:
    """An async context manager; `aclose()` is idempotent. `on_published` runs after
    the brokers acknowledged a batch and before the rows are marked (tests use it to
    fail at exactly that point)."""

    def __init__(self, config: RelayConfig, *, on_published: OnPublished | None = None) -> None:
        self.config = config
        self._on_published = on_published
        self._publisher = Publisher(config.producer)
        self._pool: asyncpg.Pool | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._wake = asyncio.Event()
        self._closing = asyncio.Event()
        self._closed = asyncio.Event()
        self._state = "new"
        self.published = 0
        # NOTIFY is only a wake-up hint (the relay polls anyway); a new LISTEN
        # session wakes the loop too: rows may have committed while nobody listened.
        self._listener = Listener(
            config.database_url,
            NOTIFY_CHANNEL,
            lambda _payload: self._wake.set(),
            application_name=LISTEN_APPLICATION_NAME,
            on_up=self._wake.set,
            on_failure=self._database_failed,
            connect_timeout_s=config.connect_timeout_s,
            check_interval_s=config.listen_check_interval_s,
            max_backoff_s=config.max_backoff_s,
        )
        self.last_lag: Lag | None = None
        # An outage is logged once, then at most once a minute (with a count),
        # whichever loop meets it first; recovery is logged once.
        self._db_down = RepeatingNotice(log)
        self._kafka_down = RepeatingNotice(log)

    async def start(self) -> None:
        """Does not need Kafka or PostgreSQL to be up: the loops connect and retry."""
        if self._state != "new":
            raise RuntimeError(f"cannot start a relay that is {self._state}")
        self._state = "running"
        c = self.config
        self._pool = await asyncpg.create_pool(
            c.database_url,
            min_size=0,
            max_size=2,
            timeout=c.connect_timeout_s,
            server_settings={
                "application_name": "auth-service-relay",
                "statement_timeout": "30000",
                # A relay stuck mid-batch must not hold its row locks forever.
                "idle_in_transaction_session_timeout": str(
                    int((c.producer.request_timeout_s * 2 + 30) * 1000)
                ),
            },
        )
        await self._listener.start()
        self._tasks = [
            asyncio.create_task(self._publish_loop(), name="relay-publish"),
            asyncio.create_task(self._housekeeping_loop(), name="relay-housekeeping"),
        ]
        log.info(
            "outbox relay started (topics %s, brokers %s)",
            dict(c.producer.topics),
            c.producer.bootstrap_servers,
        )

    async def aclose(self) -> None:
        if self._state in {"closing", "closed"}:
            await self._closed.wait()
            return
        self._state = "closing"
        self._closing.set()
        self._wake.set()
        try:
            await self._listener.aclose()
            if self._tasks:
                # Let the batch in flight finish; then cancel (its transaction rolls
                # back and the rows are published again later).
                _, pending = await asyncio.wait(self._tasks, timeout=self.config.close_timeout_s)
                for task in pending:
                    task.cancel()
                await asyncio.gather(*self._tasks, return_exceptions=True)
            await self._publisher.aclose()
            if self._pool is not None:
                try:
                    await asyncio.wait_for(self._pool.close(), timeout=self.config.close_timeout_s)
                except Exception:
                    self._pool.terminate()
        finally:
            self._state = "closed"
            self._closed.set()
            log.info("outbox relay stopped")

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

    def wake(self) -> None:
        self._wake.set()

    @property
    def listening(self) -> bool:
        """True while the LISTEN connection is up."""
        return self._listener.listening

    @property
    def listen_sessions(self) -> int:
        """How many times the LISTEN connection was established."""
        return self._listener.sessions

    async def _sleep(self, seconds: float) -> None:
        """Sleep, cut short by aclose()."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._closing.wait()

    def _database_failed(self, exc: BaseException) -> None:
        self._db_down.notice(
            "outbox relay: %s; events wait in the outbox, retrying",
            describe(self.config.database_url, exc),
        )

    def _database_ok(self) -> None:
        self._db_down.clear("outbox relay: the database answers again")

    async def _publish_loop(self) -> None:
        backoff = Backoff(0.1, self.config.max_backoff_s)
        brokers = self.config.producer.bootstrap_servers
        while not self._closing.is_set():
            self._wake.clear()
            try:
                await self._publisher.start()
            except Exception as exc:
                self._kafka_down.notice(
                    "outbox relay: cannot reach Kafka at %s: %s; events wait in the outbox, retrying",
                    brokers,
                    _describe(exc),
                )
                await self._sleep(backoff.next())
                continue
            try:
                claimed = await self.publish_batch()
            except PublishError as exc:
                self._kafka_down.notice(
                    "outbox relay: Kafka at %s did not acknowledge: %s; retrying",
                    brokers,
                    _describe(exc),
                )
                await self._sleep(backoff.next())
                continue
            except Exception as exc:
                self._database_failed(exc)
                await self._sleep(backoff.next())
                continue
            self._database_ok()
            self._kafka_down.clear("outbox relay: publishing to Kafka again")
            backoff.reset()
            if claimed >= self.config.batch_size:
                continue
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.config.poll_interval_s):
                    await self._wake.wait()

    async def publish_batch(self) -> int:
        """Claim, publish and mark one batch. Returns how many rows were claimed;
        raises PublishError (after committing the successes) when some failed."""
        assert self._pool is not None
        failed: list[tuple[OutboxRecord, BaseException]] = []
        async with self._pool.acquire() as conn, conn.transaction():
            records = await OutboxStore.claim(
                conn, self.config.batch_size, list(self.config.producer.topics)
            )
            if not records:
                return 0
            results = await self._publisher.publish(records)
            acked = [r for r, err in zip(records, results, strict=True) if err is None]
            failed = [(r, err) for r, err in zip(records, results, strict=True) if err is not None]
            if acked and self._on_published is not None:
                await self._on_published(acked)
            await OutboxStore.mark_published(conn, [r.id for r in acked])
            if failed:
                await OutboxStore.record_failure(
                    conn, [r.id for r, _ in failed], _describe(failed[0][1])
                )
        self.published += len(acked)
        EVENTS_PUBLISHED.inc(len(acked))
        if failed:
            EVENTS_FAILED.inc(len(failed))
            raise PublishError(
                f"{len(failed)} of {len(records)} events not acknowledged: "
                f"{_describe(failed[0][1])}"
            )
        return len(records)

    async def _housekeeping_loop(self) -> None:
        """Outbox lag into metrics and logs; prune published rows past retention."""
        assert self._pool is not None
        c = self.config
        loop = asyncio.get_running_loop()
        next_prune = loop.time()
        last_warning = float("-inf")
        while not self._closing.is_set():
            try:
                async with self._pool.acquire() as conn:
                    lag = await OutboxStore.lag(conn)
                    self.last_lag = lag
                    OUTBOX_UNPUBLISHED.set(lag.unpublished)
                    OUTBOX_OLDEST_AGE.set(lag.oldest_age_s)
                    if lag.oldest_age_s > c.lag_warn_s and loop.time() - last_warning > 30:
                        last_warning = loop.time()
                        log.warning(
                            "outbox lag: %d unpublished events, oldest %.0fs old",
                            lag.unpublished,
                            lag.oldest_age_s,
                            extra={
                                "outbox_unpublished": lag.unpublished,
                                "outbox_oldest_age_s": round(lag.oldest_age_s, 3),
                            },
                        )
                    if loop.time() >= next_prune:
                        pruned = await OutboxStore.prune(conn, c.retention_s)
                        next_prune = loop.time() + c.prune_interval_s
                        ROWS_PRUNED.inc(pruned)
                        if pruned:
                            log.info("pruned %d published outbox rows", pruned)
            except Exception as exc:
                self._database_failed(exc)
            await self._sleep(c.lag_interval_s)


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


async def run_relay(settings: Settings) -> int:
    """`auth-service relay`: run until SIGTERM/SIGINT."""
    provider = tracing.start() if settings.tracing else None
    try:
        async with Relay(RelayConfig.from_settings(settings)):
            sig = await wait_for_shutdown_signal()
            log.info("received %s: stopping the relay", sig.name)
    finally:
        if provider is not None:  # export the spans still buffered
            await asyncio.to_thread(tracing.stop, provider)
    return 0
