"""The composition root of a server process: start the parts in order, stop them in
reverse.

The gRPC server itself is built in `grpc_server`.

AuthServer.start():  pool -> extra components (relay, ...) -> gRPC server + health
AuthServer.stop():   health NOT_SERVING -> server.stop(grace) -> components -> pool
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Self

import asyncpg
import grpc

from auth_service import tracing
from auth_service.addresses import format_host_port, local_address, parse_host_port
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
from auth_service.api.rpc import Access
from auth_service.api.servicers import AuthServicer, UserAdminServicer
from auth_service.api.store_metrics import track_lookup, track_pool
from auth_service.api.tls import server_tls
from auth_service.config import ConfigError, Settings
from auth_service.config.tokens import TokenFormatError, admin_entries
from auth_service.events.relay import Relay
from auth_service.events.relay_config import RelayConfig
from auth_service.signals import wait_for_shutdown_signal
from auth_service.store import pool as db
from auth_service.store.deletion import OnDeleted
from auth_service.store.erasure import ErasureJob
from auth_service.store.lookup import StateLookup
from auth_service.store.migrations import bundled_versions
from auth_service.store.outbox import write_user_deleted
from auth_service.store.state_cache import StateCache, UserChangeFeed
from auth_service.store.status import DatabaseStatus
from auth_service.store.users import UserRepository

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
    """One auth-service process: pool, gRPC server, health. An async context manager;
    `stop()` is idempotent."""

    def __init__(
        self,
        settings: Settings,
        *,
        tokens: TokenRegistry | None = None,
        on_deleted: OnDeleted | None = None,
    ) -> None:
        self.settings = settings
        # `tokens` given: exactly these callers (the token file is not read).
        self._fixed_tokens = tokens is not None
        self.tokens = tokens if tokens is not None else token_registry(settings)
        self.access: Access | None = None
        # Every committed deletion writes its user_deleted event to the outbox.
        self._on_deleted = on_deleted if on_deleted is not None else write_user_deleted
        self.relay: Relay | None = None
        self.erasure: ErasureJob | None = None
        self.user_changes: UserChangeFeed | None = None
        self.metrics: MetricsServer | None = None
        self._lookup: StateLookup | None = None
        self._pool: asyncpg.Pool | None = None
        self._server: grpc.aio.Server | None = None
        self._health: HealthMonitor | None = None
        self._closers: list[Callable[[], Awaitable[None]]] = []
        self._port = 0
        self._stopped = asyncio.Event()
        self._state = "new"
        # Shared by the repository (counts queries), health (schema, stalls) and
        # admission (refuses calls the database cannot answer).
        self.database = DatabaseStatus(stall_s=settings.stall_timeout_ms / 1000)

    @property
    def pool(self) -> asyncpg.Pool:
        assert self._pool is not None, "server not started"
        return self._pool

    @property
    def port(self) -> int:
        return self._port

    @property
    def address(self) -> str:
        return local_address(self.settings.listen, self._port)

    def add_closer(self, closer: Callable[[], Awaitable[None]]) -> None:
        """Register a component to close (in reverse order) after the gRPC server."""
        self._closers.append(closer)

    async def start(self) -> None:
        if self._state != "new":
            raise RuntimeError(f"cannot start a server that is {self._state}")
        self._state = "starting"
        try:
            await self._start()
        except BaseException:
            await self.stop(grace=0)
            raise
        self._state = "running"

    async def _start(self) -> None:
        s = self.settings
        self._pool = await db.create_pool(s)
        await db.warm_up(self._pool, s.pool_min_size)
        if s.metrics_listen:
            # Up before the rest (and closed after it), so scrapes see start-up and drain.
            check_can_bind(
                s.metrics_listen, "serve metrics on", "METRICS_LISTEN or --metrics-listen"
            )
            self.metrics = MetricsServer(s.metrics_listen)
            try:
                await self.metrics.start()
            except OSError as exc:
                raise ServerStartError(
                    f"cannot serve metrics on {s.metrics_listen}: {exc}"
                ) from exc
            self.add_closer(self.metrics.aclose)
            self.add_closer(track_pool(self._pool))
        if s.relay_enabled and s.kafka_bootstrap_servers:
            # Needs neither Kafka nor PostgreSQL up: it connects and retries by itself.
            self.relay = Relay(RelayConfig.from_settings(s))
            await self.relay.start()
            self.add_closer(self.relay.aclose)
        users = UserRepository(self._pool, self.database)
        # Deleted users' personal data that is due (a retention period, or rows
        # deleted before erasure existed); safe on every replica at once.
        self.erasure = ErasureJob(
            self._pool, retention_s=s.pii_retention_s, interval_s=s.pii_erasure_interval_s
        )
        await self.erasure.start()
        self.add_closer(self.erasure.aclose)
        # User states cached in this process, and an index of every user, kept
        # exact by the users table's change notifications (store/state_cache.py);
        # off with STATE_CACHE_SIZE=0 and STATE_INDEX_MAX_USERS=0.
        cache = StateCache(max_size=s.state_cache_size)
        if s.state_cache_size > 0 or s.state_index_max_users > 0:
            self.user_changes = UserChangeFeed(
                s.database_url,
                cache,
                index_max_users=s.state_index_max_users,
                connect_timeout_s=s.connect_timeout_s,
                max_backoff_s=s.relay_max_backoff_s,
            )
            await self.user_changes.start()
            self.add_closer(self.user_changes.aclose)
        limits = Limits(
            max_in_flight=s.max_concurrent_rpcs,
            max_in_flight_per_caller=s.per_caller_concurrency,
            rate_per_s=s.rate_limit_rps,
            burst=s.rate_limit_burst,
        )
        self._lookup = StateLookup(
            users,
            cache=cache,
            max_in_flight=s.lookup_concurrency,
            max_window=s.lookup_window_ms / 1000,
            # The collection window only when calls queue up anyway.
            backlog=lambda: limits.in_flight,
        )
        self.add_closer(self._lookup.aclose)
        if self.metrics is not None:
            self.add_closer(track_lookup(self._lookup))
        access = Access(
            self.tokens,
            allow_unauthenticated_reads=s.allow_unauthenticated_reads,
            limits=limits,
            metrics=bool(s.metrics_listen),
            database=self.database,
        )
        self.access = access
        declare_callers([ANONYMOUS.name, *self.tokens.callers])
        if s.auth_tokens_file and not self._fixed_tokens:
            await self._watch_token_file(access)
        tls = server_tls(s)
        budget = s.statement_timeout_ms / 1000

        server = new_grpc_server(s)
        health_servicer = add_services(
            server,
            s,
            AuthServicer(users, access, budget, self._lookup),
            UserAdminServicer(
                users,
                access,
                budget,
                self._on_deleted,
                erase_at_once=s.pii_retention_s == 0,
                lookup=self._lookup,
            ),
        )
        self._port = bind(server, s.listen, tls, reuse_port=s.reuse_port)
        self._server = server
        self._health = HealthMonitor(
            health_servicer,
            s.database_url,
            s.health_interval_s,
            s.connect_timeout_s,
            status=self.database,
            needed_migrations=bundled_versions(),
        )
        await self._health.start()
        await server.start()
        host, _ = parse_host_port(s.listen)
        bound = format_host_port(host.strip("[]"), self._port)
        local = "" if bound == self.address else f"; reached locally at {self.address}"
        log.info(
            "auth-service listening on %s (%s; database %s%s)",
            bound,
            "plaintext" if tls is None else ("mTLS" if tls.mutual else "TLS"),
            "ready" if self._health.serving else "NOT ready yet, see above",
            local,
        )
        if not len(access.tokens) and not s.allow_unauthenticated_reads:
            log.warning("no caller tokens configured: every API call will be UNAUTHENTICATED")

    async def _watch_token_file(self, access: Access) -> None:
        s = self.settings
        assert s.auth_tokens_file is not None

        def apply(registry: TokenRegistry) -> None:
            access.tokens = self.tokens = registry
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
        self.add_closer(watcher.aclose)

    async def stop(self, grace: float | None = None) -> None:
        """Health NOT_SERVING, let in-flight calls finish for `grace` seconds, then close
        components and the pool. Safe to call more than once."""
        if self._state in {"stopping", "stopped"}:
            await self._stopped.wait()
            return
        self._state = "stopping"
        grace = self.settings.shutdown_grace_s if grace is None else grace
        try:
            if self._health is not None:
                await self._health.shutdown()
            if self._server is not None:
                await self._server.stop(grace)
            for closer in reversed(self._closers):
                try:
                    await closer()
                except Exception:
                    log.exception("error while closing a component")
            if self._pool is not None:
                try:
                    await asyncio.wait_for(self._pool.close(), timeout=max(grace, 1.0))
                except (TimeoutError, Exception):
                    self._pool.terminate()
        finally:
            self._state = "stopped"
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


async def serve(settings: Settings) -> int:
    """Run until SIGTERM/SIGINT, then shut down gracefully. Returns the exit code."""
    provider = tracing.start() if settings.tracing else None
    try:
        async with AuthServer(settings):
            sig = await wait_for_shutdown_signal()
            log.info("received %s: draining for up to %.1fs", sig.name, settings.shutdown_grace_s)
    finally:
        if provider is not None:  # export the spans still buffered
            await asyncio.to_thread(tracing.stop, provider)
    log.info("auth-service stopped")
    return 0
