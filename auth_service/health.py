"""gRPC health status that follows the database: NOT_SERVING while it is unreachable."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import asyncpg
from grpc_health.v1 import health_pb2
from grpc_health.v1._async import HealthServicer

from auth_service import db

log = logging.getLogger(__name__)

SERVICES = ("", "auth.v1.AuthService", "auth.v1.UserAdminService")


class HealthMonitor:
    """Pings the database every `interval` seconds and sets every service's status."""

    def __init__(self, servicer: HealthServicer, pool: asyncpg.Pool, interval: float) -> None:
        self._servicer = servicer
        self._pool = pool
        self._interval = interval
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
        ok = await db.ping(self._pool, timeout=max(self._interval, 1.0))
        await self._set(ok)
        return ok

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
