"""gRPC health that says whether this replica can answer.

`auth.v1.UserAdminService` is SERVING only while the database answers, its schema is
the one this release needs, and queries are not stalled. `auth.v1.AuthService` (and
the server as a whole, service "") is SERVING then too, and also while the database
is slow or unreachable but memory answers every id: the index of every user is
loaded and the change feed that keeps it exact is up (`memory_answers`). Those
reads need no query, so a load balancer must keep the replica in rotation; the
feed checks its own connection every 10 s, so that lasts at most about 15 s after
the database stops answering.

The monitor pings over a connection of its own, not the request pool: a pool busy
with slow queries (answered RESOURCE_EXHAUSTED / DEADLINE_EXCEEDED) must not make
a replica look dead to the load balancer, and a dead database must show up even
when no request comes in. Between pings it watches the request path's
`DatabaseStatus`, so a database that stops answering (frozen, not refusing) flips
health within about half a second rather than at the next ping's timeout.

The servicer is grpcio-health-checking's, plus `List` (advertised by reflection,
not implemented there) and a `Check` that names an unknown service.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from typing import Any

import asyncpg
import grpc
from grpc_health.v1 import health_pb2
from grpc_health.v1._async import HealthServicer

from auth_service import lifecycle
from auth_service.notices import RepeatingNotice
from auth_service.store.connection import describe
from auth_service.store.migrations import check_schema
from auth_service.store.status import DatabaseStatus

log = logging.getLogger(__name__)

SERVICES = ("", "auth.v1.AuthService", "auth.v1.UserAdminService")
# SERVING while memory answers reads, even when the database does not.
_READ_SERVICES = frozenset({"", "auth.v1.AuthService"})
_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class AuthHealthServicer(HealthServicer):  # type: ignore[misc]  # untyped base
    """grpc.health.v1.Health with List implemented and a readable NOT_FOUND."""

    async def Check(self, request: health_pb2.HealthCheckRequest, context: Any) -> Any:
        status = self._server_status.get(request.service)
        if status is None:
            known = ", ".join(repr(name) for name in sorted(self._server_status))
            await context.abort(
                grpc.StatusCode.NOT_FOUND,
                f"no health status for service {request.service[:100]!r}; known: {known}",
            )
        return health_pb2.HealthCheckResponse(status=status)

    async def List(self, request: health_pb2.HealthListRequest, context: Any) -> Any:  # noqa: ARG002
        return health_pb2.HealthListResponse(
            statuses={
                name: health_pb2.HealthCheckResponse(status=status)
                for name, status in self._server_status.items()
            }
        )


class HealthMonitor(lifecycle.Owner):
    """Pings the database every `interval` seconds (checking the schema on the same
    connection), watches `status` in between, and sets every service's health."""

    def __init__(
        self,
        servicer: HealthServicer,
        database_url: str,
        interval: float,
        connect_timeout: float = 5.0,
        *,
        status: DatabaseStatus | None = None,
        needed_migrations: Sequence[str] = (),
        memory_answers: Callable[[], bool] = lambda: False,
    ) -> None:
        super().__init__("the health monitor")
        self._servicer = servicer
        self._database_url = database_url
        self._interval = interval
        self._connect_timeout = connect_timeout
        self._status = status if status is not None else DatabaseStatus()
        self._needed = tuple(needed_migrations)
        self._conn: asyncpg.Connection | None = None
        self._task: asyncio.Task[None] | None = None
        self._memory_answers = memory_answers
        self._serving: bool | None = None  # the database answers
        self._statuses: dict[str, int] = {}
        self._stopped = False
        self._ping_ok = False
        self._schema_notice = RepeatingNotice(log, level=logging.ERROR, interval=300.0)
        self._ahead_logged = False

    @property
    def serving(self) -> bool:
        """The database answers (every service SERVING)."""
        return bool(self._serving)

    async def _start(self) -> None:
        await self.check_once()
        self._task = asyncio.create_task(self._run(), name="health-monitor")

    async def check_once(self) -> bool:
        """Ping (and check the schema) now; set health accordingly."""
        why = await self._ping(timeout=max(self._interval, 1.0))
        self._ping_ok = why is None
        if why is not None and self._serving is not False:
            log.error("database unreachable: %s; health NOT_SERVING, retrying", why)
        return await self._update()

    async def _update(self) -> bool:
        stalled = self._status.stalled()
        ok = self._ping_ok and self._status.schema_problem is None and not stalled
        if not ok and stalled and self._serving:
            log.error(
                "database not answering: %s; health NOT_SERVING%s",
                self._status.refusal(),
                " (AuthService SERVING: memory answers every id)" if self._memory_answers() else "",
            )
        await self._set(ok)
        return ok

    async def _ping(self, timeout: float) -> str | None:
        """None when the database answered, else where it is and why it did not."""
        try:
            async with asyncio.timeout(timeout + self._connect_timeout):
                if self._conn is None or self._conn.is_closed():
                    self._conn = await asyncpg.connect(
                        self._database_url,
                        timeout=self._connect_timeout,
                        server_settings={"application_name": "auth-service-health"},
                    )
                await self._conn.fetchval("SELECT 1", timeout=timeout)
                if self._needed:
                    await self._check_schema(self._conn)
        except Exception as exc:
            await self._drop_connection()
            return describe(self._database_url, exc)
        return None

    async def _check_schema(self, conn: asyncpg.Connection) -> None:
        check = await check_schema(conn, self._needed)
        problem = check.problem
        if problem is not None:
            self._schema_notice.notice("%s; health NOT_SERVING until then", problem)
        else:
            self._schema_notice.clear("database schema is up to date")
        self._status.schema_problem = problem
        if check.unknown and not self._ahead_logged:
            self._ahead_logged = True
            log.warning(
                "the database has %d migration(s) this release does not know (newest %s):"
                " expected while a rolling upgrade replaces this release",
                len(check.unknown),
                check.unknown[-1],
            )

    async def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.terminate()

    async def _set(self, serving: bool, *, reason: str = "database") -> None:
        if self._stopped:
            return
        if serving != self._serving:
            if reason == "shutdown":
                log.info("shutting down: health NOT_SERVING")
            elif self._serving is not None and serving:
                log.info("database reachable again: health SERVING")
            self._serving = serving
        reads = serving or (
            reason != "shutdown" and self._status.schema_problem is None and self._memory_answers()
        )
        for name in SERVICES:
            up = reads if name in _READ_SERVICES else serving
            status = _SERVING if up else _NOT_SERVING
            if self._statuses.get(name) != status:
                self._statuses[name] = status
                await self._servicer.set(name, status)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        tick = min(self._interval, 0.1)
        next_ping = loop.time() + self._interval
        while True:
            await asyncio.sleep(tick)
            if loop.time() >= next_ping:
                await self.check_once()
                next_ping = loop.time() + self._interval
            else:
                await self._update()

    async def shutdown(self) -> None:
        """Report NOT_SERVING for good (load balancers stop sending) and stop pinging."""
        await self._set(serving=False, reason="shutdown")
        self._stopped = True
        await self.aclose()

    async def _close(self) -> None:
        task, self._task = self._task, None
        await lifecycle.cancel(task)
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), timeout=1.0)
            if not conn.is_closed():
                conn.terminate()
