"""The composition root of a server process: start the parts in order, stop them in
reverse.

The gRPC server itself is built in `grpc_server`.

AuthServer.start():  pool -> metrics -> relay -> erasure -> change feed -> lookups
                     -> token file -> health -> gRPC server
AuthServer.stop():   the reverse: health NOT_SERVING -> server.stop(grace) -> health
                     -> ... -> pool
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from types import TracebackType
from typing import Protocol, Self, TypeVar

import asyncpg
import grpc

from auth_service import tracing
from auth_service.addresses import format_host_port, local_address, parse_host_port
from auth_service.api.admission import Admission
from auth_service.api.authorization import Authorization
from auth_service.api.callers import ANONYMOUS, TokenFile, TokenRegistry
from auth_service.api.grpc_server import (
    ServerStartError,
    add_services,
    bind,
    check_can_bind,
    new_grpc_server,
)
from auth_service.api.health import HealthMonitor
from auth_service.api.limits import Limits
from auth_service.api.metrics import declare_callers
from auth_service.api.metrics_endpoint import MetricsServer
from auth_service.api.observation import Observation
from auth_service.api.rpc import CallPath
from auth_service.api.servicers import AuthServicer, UserAdminServicer, UserReplicationServicer
from auth_service.api.store_metrics import track_lookup, track_pool, track_replicas
from auth_service.api.tls import ServerTLS, server_tls
from auth_service.config import ConfigError, Settings
from auth_service.config.tokens import TokenFormatError, admin_entries
from auth_service.events.relay import Relay
from auth_service.events.relay_config import RelayConfig
from auth_service.lifecycle import LifecycleGuard
from auth_service.signals import wait_for_shutdown_signal
from auth_service.store import pool as db
from auth_service.store.deletion import OnDeleted
from auth_service.store.erasure import ErasureJob
from auth_service.store.lookup import StateLookup
from auth_service.store.migrations import bundled_versions
from auth_service.store.outbox import (
    write_user_created,
    write_user_deleted,
    write_user_deleted_in_order,
)
from auth_service.store.replicas import ReadReplicas
from auth_service.store.state_cache import StateCache
from auth_service.store.status import DatabaseStatus
from auth_service.store.user_changes import UserChangeFeed
from auth_service.store.user_export import UserExport
from auth_service.store.users import OnCreated, UserRepository

log = logging.getLogger(__name__)


def token_registry(settings: Settings) -> TokenRegistry:
    """The callers of ADMIN_TOKENS and AUTH_TOKENS (AUTH_TOKENS_FILE is added at start)."""
    try:
        return TokenRegistry.from_entries(
            [*admin_entries(settings.admin_tokens), *settings.auth_tokens]
        )
    except TokenFormatError as exc:
        raise ConfigError({"AUTH_TOKENS": str(exc)}) from exc


class AuthServer:
    """One auth-service process: pool, components, gRPC server, health. An async
    context manager; a second `start()` is refused, `stop()` is idempotent.

    `_compose` is the composition root: each part is started in order and its
    closer pushed on one `AsyncExitStack`, so the stop order is the reverse by
    construction.

    `user_created_topic`: turns `user_created` events on (docs/events.md): every
    CreateUser writes one in its transaction, the relay publishes them to this
    topic, and every user event takes a position (commit order, no holes). None
    (the default): CreateUser writes none, deletions carry position 0."""

    def __init__(
        self,
        settings: Settings,
        *,
        tokens: TokenRegistry | None = None,
        on_deleted: OnDeleted | None = None,
        user_created_topic: str | None = None,
        on_created: OnCreated | None = None,
    ) -> None:
        self.settings = settings
        # `tokens` given: exactly these callers (the token file is not read).
        self._fixed_tokens = tokens is not None
        self.tokens = tokens if tokens is not None else token_registry(settings)
        # Every committed deletion writes its user_deleted event to the outbox; with
        # user_created events on, every creation writes its event too, and both
        # take positions.
        self.user_created_topic = user_created_topic or settings.kafka_user_created_topic
        user_created_topic = self.user_created_topic
        if on_deleted is None:
            on_deleted = write_user_deleted_in_order if user_created_topic else write_user_deleted
        self._on_deleted = on_deleted
        if on_created is None and user_created_topic:
            on_created = write_user_created
        self._on_created = on_created
        self.path: CallPath | None = None
        self.relay: Relay | None = None
        self.erasure: ErasureJob | None = None
        self.user_changes: UserChangeFeed | None = None
        self.replicas: ReadReplicas | None = None
        self.metrics: MetricsServer | None = None
        self._lookup: StateLookup | None = None
        self._pool: asyncpg.Pool | None = None
        self._health: HealthMonitor | None = None
        self._stack = contextlib.AsyncExitStack()
        self._life = LifecycleGuard("the server")
        self._grace = settings.shutdown_grace_s
        self._stopped = asyncio.Event()
        self._port = 0
        # Shared by the repository (counts queries, refuses them while the database
        # cannot answer), health (schema, stalls) and admission.
        self.database = DatabaseStatus(stall_s=settings.stall_timeout_ms / 1000)

    @property
    def pool(self) -> asyncpg.Pool:
        assert self._pool is not None, "server not started"
        return self._pool

    @property
    def lookup(self) -> StateLookup:
        """The read path's lookups (state cache, index, merged queries)."""
        assert self._lookup is not None, "server not started"
        return self._lookup

    @property
    def admission(self) -> Admission:
        assert self.path is not None, "server not started"
        return self.path.admission

    @property
    def port(self) -> int:
        return self._port

    @property
    def address(self) -> str:
        return local_address(self.settings.listen, self._port)

    async def start(self) -> None:
        self._life.start()
        try:
            await self._compose(self._stack)
        except BaseException:
            await self.stop(grace=0)
            raise

    async def _compose(self, stack: contextlib.AsyncExitStack) -> None:
        """Start order; `stop()` runs the closers in reverse."""
        s = self.settings
        self._pool = await stack.enter_async_context(db.open_pool(s))
        await self._serve_metrics(stack)
        if s.relay_enabled and s.kafka_bootstrap_servers:
            # Needs neither Kafka nor PostgreSQL up: it connects and retries by itself.
            config = RelayConfig.from_settings(s, user_created_topic=self.user_created_topic)
            self.relay = await _started(stack, Relay(config))
        # Deleted users' personal data that is due (a retention period, or rows
        # deleted before erasure existed); safe on every replica at once.
        self.erasure = await _started(
            stack,
            ErasureJob(
                self._pool, retention_s=s.pii_retention_s, interval_s=s.pii_erasure_interval_s
            ),
        )
        replicas = await self._read_replicas(stack)
        cache = await self._follow_user_changes(stack, replicas)
        users = UserRepository(self._pool, self.database, changed=cache.changed, reads=replicas)
        path = self.path = call_path(s, self.tokens, self.database)
        self._lookup = lookup = await stack.enter_async_context(
            StateLookup(
                users,
                cache=cache,
                max_in_flight=s.lookup_concurrency,
                max_window=s.lookup_window_ms / 1000,
                target_batch=s.lookup_target_batch,
                # The collection window only when calls queue up anyway.
                backlog=lambda: path.admission.limits.in_flight,
            )
        )
        if self.metrics is not None:
            stack.push_async_callback(track_lookup(lookup))
        declare_callers([ANONYMOUS.name, *self.tokens.callers])
        if s.auth_tokens_file and not self._fixed_tokens:
            await self._watch_token_file(stack, path.authorization)
        await self._serve_grpc(stack, path, users, lookup)

    async def _serve_metrics(self, stack: contextlib.AsyncExitStack) -> None:
        """Up before the rest (and closed after it), so scrapes see start-up and drain."""
        s = self.settings
        if not s.metrics_listen:
            return
        check_can_bind(s.metrics_listen, "serve metrics on", "METRICS_LISTEN or --metrics-listen")
        metrics = MetricsServer(s.metrics_listen)
        try:
            await metrics.start()
        except OSError as exc:
            raise ServerStartError(f"cannot serve metrics on {s.metrics_listen}: {exc}") from exc
        self.metrics = metrics
        stack.push_async_callback(metrics.aclose)
        stack.push_async_callback(track_pool(self.pool))

    async def _read_replicas(self, stack: contextlib.AsyncExitStack) -> ReadReplicas | None:
        """The read replicas of DATABASE_READ_URL (store/replicas.py), if any."""
        s = self.settings
        if not s.database_read_urls:
            return None
        replicas = self.replicas = await _started(
            stack,
            ReadReplicas(
                s.database_read_urls,
                self.pool,
                max_lag_s=s.read_max_lag_ms / 1000,
                pool_max_size=s.pool_max_size,
                connect_timeout_s=s.connect_timeout_s,
                statement_timeout_ms=s.statement_timeout_ms,
            ),
        )
        if self.metrics is not None:
            stack.push_async_callback(track_replicas(replicas))
        return replicas

    async def _follow_user_changes(
        self, stack: contextlib.AsyncExitStack, replicas: ReadReplicas | None
    ) -> StateCache:
        """User states cached in this process, and an index of every user, kept exact
        by the users table's change notifications (store/state_cache.py); off with
        STATE_CACHE_SIZE=0 and STATE_INDEX_MAX_USERS=0. With read replicas, the index
        is read from one that has caught up with the primary."""
        s = self.settings
        cache = StateCache(max_size=s.state_cache_size)

        async def index_source() -> str:
            replica = None if replicas is None else await replicas.caught_up(timeout=2.0)
            return s.database_url if replica is None else replica.url

        if s.state_cache_size > 0 or s.state_index_max_users > 0:
            self.user_changes = await _started(
                stack,
                UserChangeFeed(
                    s.database_url,
                    cache,
                    index_max_users=s.state_index_max_users,
                    connect_timeout_s=s.connect_timeout_s,
                    max_backoff_s=s.relay_max_backoff_s,
                    index_source=index_source,
                ),
            )
        return cache

    async def _serve_grpc(
        self,
        stack: contextlib.AsyncExitStack,
        path: CallPath,
        users: UserRepository,
        lookup: StateLookup,
    ) -> None:
        s = self.settings
        tls = server_tls(s)
        server = new_grpc_server(s)
        health_servicer = add_services(
            server,
            path,
            AuthServicer(users, lookup),
            UserAdminServicer(
                users,
                self._on_deleted,
                on_created=self._on_created,
                erase_at_once=s.pii_retention_s == 0,
            ),
            UserReplicationServicer(UserExport(self.pool, self.database)),
        )
        self._port = bind(server, s.listen, tls, reuse_port=s.reuse_port)
        health = self._health = HealthMonitor(
            health_servicer,
            s.database_url,
            s.health_interval_s,
            s.connect_timeout_s,
            status=self.database,
            needed_migrations=bundled_versions(),
            memory_answers=lookup.cache.answers_everything,
        )
        await health.start()
        stack.push_async_callback(health.aclose)
        await server.start()
        # Stopped first: health NOT_SERVING, then in-flight calls get the grace period.
        stack.push_async_callback(self._drain, server, health)
        self._log_listening(tls, health.serving, len(path.authorization.tokens))

    async def _drain(self, server: grpc.aio.Server, health: HealthMonitor) -> None:
        await health.shutdown()
        await server.stop(self._grace)

    def _log_listening(self, tls: ServerTLS | None, ready: bool, tokens: int) -> None:
        s = self.settings
        host, _ = parse_host_port(s.listen)
        bound = format_host_port(host.strip("[]"), self._port)
        local = "" if bound == self.address else f"; reached locally at {self.address}"
        log.info(
            "auth-service listening on %s (%s; database %s%s)",
            bound,
            "plaintext" if tls is None else ("mTLS" if tls.mutual else "TLS"),
            "ready" if ready else "NOT ready yet, see above",
            local,
        )
        if not tokens and not s.allow_unauthenticated_reads:
            log.warning("no caller tokens configured: every API call will be UNAUTHENTICATED")

    async def _watch_token_file(
        self, stack: contextlib.AsyncExitStack, authorization: Authorization
    ) -> None:
        s = self.settings
        assert s.auth_tokens_file is not None

        def apply(registry: TokenRegistry) -> None:
            authorization.tokens = self.tokens = registry
            declare_callers(registry.callers)

        watcher = TokenFile(
            s.auth_tokens_file,
            static=[*admin_entries(s.admin_tokens), *s.auth_tokens],
            apply=apply,
            interval=s.tokens_reload_interval_s,
        )
        try:
            await watcher.start()
        except (OSError, TokenFormatError) as exc:
            raise ConfigError({"AUTH_TOKENS_FILE": str(exc)}) from exc
        stack.push_async_callback(watcher.aclose)

    async def stop(self, grace: float | None = None) -> None:
        """Health NOT_SERVING, let in-flight calls finish for `grace` seconds, then close
        components and the pool. Safe to call more than once."""
        if grace is not None and not self._stopped.is_set():
            self._grace = grace
        try:
            await self._life.close(self._stack.aclose)
        finally:
            self._stopped.set()

    async def aclose(self) -> None:
        await self.stop()

    async def wait_closed(self) -> None:
        await self._stopped.wait()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


class _Owner(Protocol):
    async def start(self) -> None: ...
    async def aclose(self) -> None: ...


OwnerT = TypeVar("OwnerT", bound=_Owner)


async def _started(stack: contextlib.AsyncExitStack, owner: OwnerT) -> OwnerT:
    """Start `owner` and close it when `stack` closes."""
    await owner.start()
    stack.push_async_callback(owner.aclose)
    return owner


def call_path(settings: Settings, tokens: TokenRegistry, database: DatabaseStatus) -> CallPath:
    """The per-call steps of one server (api/rpc.py), composed once."""
    s = settings
    limits = Limits(
        max_in_flight=s.max_concurrent_rpcs,
        max_in_flight_per_caller=s.per_caller_concurrency,
        rate_per_s=s.rate_limit_rps,
        burst=s.rate_limit_burst,
    )
    return CallPath(
        Authorization(tokens, allow_unauthenticated_reads=s.allow_unauthenticated_reads),
        Admission(limits, database),
        Observation(metrics=bool(s.metrics_listen)),
        default_budget_s=s.statement_timeout_ms / 1000,
        max_request_bytes=s.max_request_bytes,
    )


async def serve(settings: Settings) -> int:
    """Run until SIGTERM/SIGINT, then shut down gracefully. Returns the exit code."""
    async with tracing.exporting(settings.tracing), AuthServer(settings):
        sig = await wait_for_shutdown_signal()
        log.info("received %s: draining for up to %.1fs", sig.name, settings.shutdown_grace_s)
    log.info("auth-service stopped")
    return 0
