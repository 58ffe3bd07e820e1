"""gRPC health status that follows the database: NOT_SERVING while it is unreachable.

The monitor pings over a connection of its own, not the request pool: a pool busy
with slow queries (answered RESOURCE_EXHAUSTED / DEADLINE_EXCEEDED) must not make
a replica look dead to the load balancer, and a dead database must show up even
when no request comes in.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import asyncpg
from grpc_health.v1 import health_pb2
from grpc_health.v1._async import HealthServicer

log = logging.getLogger(__name__)

SERVICES = ("", "auth.v1.AuthService", "auth.v1.UserAdminService")


class HealthMonitor:
    """Pings the database every `interval` seconds and sets every service's status."""

    def __init__(
        self,
        servicer: HealthServicer,
        database_url: str,
        interval: float,
        connect_timeout: float = 5.0,
    ) -> None:
        self._servicer = servicer
        self._database_url = database_url
        self._interval = interval
        self._connect_timeout = connect_timeout
        self._conn: asyncpg.Connection | None = None
        self._task: asyncio.Task[None] | None = None
        self._serving: bool | None = None
        self._stopped = False

    @property
    def serving(self) -> bool:
        return bool(self._serving)

    async def start(self) -> None:
        await self.check_once()
        self._task = asyncio.create_task(self._run(), name="health-monitor")

    async def check_once(self) -> bool:
        ok = await self._ping(timeout=max(self._interval, 1.0))
        await self._set(ok)
        return ok

    async def _ping(self, timeout: float) -> bool:
        try:
            async with asyncio.timeout(timeout + self._connect_timeout):
                if self._conn is None or self._conn.is_closed():
                    self._conn = await asyncpg.connect(
                        self._database_url,
                        timeout=self._connect_timeout,
                        server_settings={"application_name": "auth-service-health"},
                    )
                await self._conn.fetchval("SELECT 1", timeout=timeout)
        except Exception:
            await self._drop_connection()
            return False
        return True

    async def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.terminate()

    async def _set(self, serving: bool, *, reason: str = "database") -> None:
        if self._stopped or serving == self._serving:
            return
        if reason == "shutdown":
            log.info("shutting down: health NOT_SERVING")
        elif self._serving is not None:
            if serving:
                log.info("database reachable again: health SERVING")
            else:
                log.error("database unreachable: health NOT_SERVING")
        self._serving = serving
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in SERVICES:
            await self._servicer.set(name, status)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            await self.check_once()

    async def shutdown(self) -> None:
        """Report NOT_SERVING for good (load balancers stop sending) and stop pinging."""
        await self._set(serving=False, reason="shutdown")
        self._stopped = True
        await self.aclose()

    async def aclose(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), timeout=1.0)
            if not conn.is_closed():
                conn.terminate()
