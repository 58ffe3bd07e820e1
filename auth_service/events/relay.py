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
import enum
import logging
import traceback
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, Self

import asyncpg
from aiokafka.errors import KafkaError
from prometheus_client import Counter, Gauge

from auth_client.backoff import Backoff
from auth_service.errors import UnavailableError
from auth_service.events.publisher import Publisher, PublishError
from auth_service.events.relay_config import RelayConfig
from auth_service.events.topics import TopicWatch
from auth_service.lifecycle import Lifecycle, LifecycleGuard
from auth_service.notices import RepeatingNotice
from auth_service.store.connection import describe
from auth_service.store.listen import Listener
from auth_service.store.outbox import NOTIFY_CHANNEL, Lag, OutboxRecord, OutboxStore

if TYPE_CHECKING:
    from types import TracebackType

    from auth_service.store.pool import Conn

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


class Cause(enum.Enum):
    """What a relay failure is down to; it decides which notice tells it."""

    DATABASE = "database"
    KAFKA = "kafka"
    UNEXPECTED = "unexpected"  # a bug: an event that cannot be encoded, a hook that raised


# Talking to PostgreSQL failed: no connection, a lost one (asyncpg's
# InternalClientError too, see a fast shutdown), a pool or query timeout, or an
# error the server answered (a missing table: the migrations were not applied).
_DATABASE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    UnavailableError,
)
# The producer's own failures; the publisher reports every other one as it is.
_KAFKA_ERRORS: tuple[type[BaseException], ...] = (KafkaError, PublishError)
# Batches failed by Kafka in a row after which the relay replaces its producer: a
# producer can be stuck in a state only a new one leaves (an idempotent producer's
# sequence numbers after a leader change), and a new one costs a reconnect.
_KAFKA_STREAK = 3
# Distinct unexpected causes the relay keeps a notice for (beyond: one per type).
_MAX_CAUSES = 32


def cause_of(exc: BaseException) -> Cause:
    """The cause of one failure of a relay loop. A PublishError is Kafka's, unless
    a record failed for a reason of its own (see `causes`)."""
    if isinstance(exc, _KAFKA_ERRORS):
        return Cause.KAFKA
    if isinstance(exc, _DATABASE_ERRORS):
        return Cause.DATABASE
    return Cause.UNEXPECTED


def causes(exc: BaseException) -> list[tuple[Cause, BaseException]]:
    """`exc` with its cause; for a PublishError, the records' unexpected errors each
    on its own, and the PublishError itself when some records failed in Kafka."""
    if not isinstance(exc, PublishError) or not exc.errors:
        return [(cause_of(exc), exc)]
    out: list[tuple[Cause, BaseException]] = [
        (Cause.UNEXPECTED, error) for error in exc.errors if not isinstance(error, _KAFKA_ERRORS)
    ]
    if any(isinstance(error, _KAFKA_ERRORS) for error in exc.errors):
        out.append((Cause.KAFKA, exc))
    return out


class Relay:
    """An async context manager: new -> running -> closed (`auth_service.lifecycle`);
    `start()` once, `aclose()` idempotent. `on_published` runs after the brokers
    acknowledged a batch and before the rows are marked (tests use it to fail at
    exactly that point)."""

    def __init__(self, config: RelayConfig, *, on_published: OnPublished | None = None) -> None:
        self.config = config
        self._on_published = on_published
        self._life = LifecycleGuard("the outbox relay")
        self._stack = contextlib.AsyncExitStack()
        self._publisher = Publisher(config.producer)
        self.topics = TopicWatch(
            config.producer.topics.values(),
            config.producer.bootstrap_servers,
            self._metadata,
        )
        self._kafka_streak = 0  # batches failed by Kafka in a row
        self.publisher_restarts = 0
        self._pool: asyncpg.Pool | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._wake = asyncio.Event()
        self._closing = asyncio.Event()
        self.published = 0
        self.polls = 0  # claim cycles finished, whatever their outcome
        # NOTIFY is only a wake-up hint (the relay polls anyway); a new LISTEN
        # session wakes the loop too: rows may have committed while nobody listened.
        self._listener = Listener(
            config.database_url,
            NOTIFY_CHANNEL,
            lambda _payload: self._wake.set(),
            application_name=LISTEN_APPLICATION_NAME,
            on_up=self._wake.set,
            on_failure=self._failed,
            connect_timeout_s=config.connect_timeout_s,
            check_interval_s=config.listen_check_interval_s,
            max_backoff_s=config.max_backoff_s,
        )
        self.last_lag: Lag | None = None
        # An outage is logged once, then at most once a minute (with a count),
        # whichever loop meets it first; recovery is logged once.
        self._db_down = RepeatingNotice(log)
        self._kafka_down = RepeatingNotice(log)
        # Replacing the producer repeats every few failed batches while Kafka is
        # down: said once per outage (then at most once a minute), like the failure.
        self._replacing = RepeatingNotice(log)
        # A bug: each distinct cause once (with its traceback), then at most every
        # five minutes with a count.
        self._unexpected: dict[str, RepeatingNotice] = {}

    @property
    def state(self) -> Lifecycle:
        return self._life.state

    async def start(self) -> None:
        """Does not need Kafka or PostgreSQL to be up: the loops connect and retry.
        Parts start in this order and stop in the reverse one."""
        self._life.start()
        try:
            await self._start()
        except BaseException:
            await self.aclose()
            raise

    async def _start(self) -> None:
        c = self.config
        stack = self._stack
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
        stack.push_async_callback(self._close_pool, self._pool)
        # Started by the publish loop; whichever publisher is current then.
        stack.push_async_callback(self._close_publisher)
        await stack.enter_async_context(self._listener)
        self._tasks = [
            asyncio.create_task(self._publish_loop(), name="relay-publish"),
            asyncio.create_task(self._housekeeping_loop(), name="relay-housekeeping"),
        ]
        stack.push_async_callback(self._stop_loops)
        log.info(
            "outbox relay started (topics %s, brokers %s)",
            dict(c.producer.topics),
            c.producer.bootstrap_servers,
        )

    async def aclose(self) -> None:
        await self._life.close(self._close)

    async def _close(self) -> None:
        self._closing.set()
        self._wake.set()
        try:
            await self._stack.aclose()
        finally:
            log.info("outbox relay stopped")

    async def _stop_loops(self) -> None:
        """Let the batch in flight finish; then cancel (its transaction rolls back and
        the rows are published again later)."""
        _, pending = await asyncio.wait(self._tasks, timeout=self.config.close_timeout_s)
        for task in pending:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _close_pool(self, pool: asyncpg.Pool) -> None:
        try:
            await asyncio.wait_for(pool.close(), timeout=self.config.close_timeout_s)
        except Exception:
            pool.terminate()

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

    def _failed(self, exc: BaseException) -> None:
        """Tell a failure of any loop (or of the LISTEN connection) by its cause."""
        for cause, error in causes(exc):
            if cause is Cause.DATABASE:
                self._database_failed(error)
            elif cause is Cause.KAFKA:
                self.topics.suspect()
                self._kafka_streak += 1
                self._kafka_failed(error)
            else:
                self._unexpected_failed(error)

    def _database_failed(self, exc: BaseException) -> None:
        self._db_down.notice(
            "outbox relay: %s; events wait in the outbox, retrying",
            describe(self.config.database_url, exc),
        )

    def _database_ok(self) -> None:
        self._db_down.clear("outbox relay: the database answers again")

    def _kafka_failed(self, exc: BaseException) -> None:
        self._kafka_down.notice(
            "outbox relay: Kafka at %s did not acknowledge: %s; retrying",
            self.config.producer.bootstrap_servers,
            _describe(exc),
        )

    def _unexpected_failed(self, exc: BaseException) -> None:
        cause = _describe(exc)
        key = cause if len(self._unexpected) < _MAX_CAUSES else type(exc).__qualname__
        notice = self._unexpected.get(key)
        if notice is None:
            notice = RepeatingNotice(log, level=logging.ERROR, interval=300.0)
            self._unexpected[key] = notice
        # RepeatingNotice has no exc_info: the traceback goes in as the `exception`
        # field, where the JSON log format puts a record's traceback.
        notice.notice(
            "outbox relay: unexpected error: %s; events wait in the outbox, retrying",
            cause,
            exception="".join(traceback.format_exception(exc)).rstrip(),
        )

    async def _metadata(self, *, as_a_send: bool = True) -> Any:
        return await self._publisher.metadata(as_a_send=as_a_send)

    async def _close_publisher(self) -> None:
        await self._publisher.aclose()

    async def _replace_publisher(self, why: str) -> None:
        """A new producer for a broken one (a closed Publisher cannot start again)."""
        self._replacing.notice("outbox relay: %s; starting a new Kafka producer", why)
        old, self._publisher = self._publisher, Publisher(self.config.producer)
        self._kafka_streak = 0
        self.publisher_restarts += 1
        await old.aclose()

    async def _start_publisher(self) -> bool:
        """Start the producer unless it runs; False (and said why) when it cannot.
        A producer that can send nothing any more, or whose last batches all failed
        in Kafka, is replaced first."""
        if self._publisher.started:
            broken = self._publisher.broken()
            if broken is not None:
                await self._replace_publisher(f"the Kafka producer stopped ({_describe(broken)})")
            elif self._kafka_streak >= _KAFKA_STREAK:
                await self._replace_publisher(f"{self._kafka_streak} batches in a row failed")
        if self._publisher.started:
            return True
        try:
            await self._publisher.start()
        except (KafkaError, OSError, TimeoutError) as exc:
            self._kafka_down.notice(
                "outbox relay: cannot reach Kafka at %s: %s; events wait in the outbox, retrying",
                self.config.producer.bootstrap_servers,
                _describe(exc),
            )
            return False
        except Exception as exc:
            self._unexpected_failed(exc)
            return False
        return True

    async def _publish_loop(self) -> None:
        backoff = Backoff(0.1, self.config.max_backoff_s)
        while not self._closing.is_set():
            self._wake.clear()
            try:
                ready = await self._start_publisher() and await self.topics.ready()
                claimed = await self.publish_batch() if ready else -1
            except Exception as exc:
                self._failed(exc)
                claimed = -1
            if claimed < 0:
                await self._sleep(backoff.next())
                continue
            self._database_ok()
            self._kafka_streak = 0
            self._replacing.clear()
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
        try:
            return await self._publish_batch()
        finally:
            self.polls += 1

    async def _publish_batch(self) -> int:
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
            errors = [err for _, err in failed]
            # Kafka's first error names the batch; a record's own (a bug) is told apart.
            first = next((e for e in errors if isinstance(e, _KAFKA_ERRORS)), errors[0])
            raise PublishError(
                f"{len(failed)} of {len(records)} events not acknowledged: {_describe(first)}",
                errors=errors,
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
                    self._record_lag(lag)
                    if lag.oldest_age_s > c.lag_warn_s and loop.time() - last_warning > 30:
                        last_warning = loop.time()
                        _warn_lag(lag)
                    if loop.time() >= next_prune:
                        await self._prune(conn)
                        next_prune = loop.time() + c.prune_interval_s
            except Exception as exc:
                self._failed(exc)
            await self._sleep(c.lag_interval_s)

    def _record_lag(self, lag: Lag) -> None:
        self.last_lag = lag
        OUTBOX_UNPUBLISHED.set(lag.unpublished)
        OUTBOX_OLDEST_AGE.set(lag.oldest_age_s)

    async def _prune(self, conn: Conn) -> None:
        pruned = await OutboxStore.prune(conn, self.config.retention_s)
        ROWS_PRUNED.inc(pruned)
        if pruned:
            log.info("pruned %d published outbox rows", pruned)


def _warn_lag(lag: Lag) -> None:
    log.warning(
        "outbox lag: %d unpublished events, oldest %.0fs old",
        lag.unpublished,
        lag.oldest_age_s,
        extra={
            "outbox_unpublished": lag.unpublished,
            "outbox_oldest_age_s": round(lag.oldest_age_s, 3),
        },
    )


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
