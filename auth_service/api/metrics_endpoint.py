"""The /metrics HTTP endpoint (`METRICS_LISTEN`): Prometheus' text format of the
default registry, served on the event loop, one port per `--workers` worker."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.exposition import choose_encoder

from auth_service.addresses import format_host_port, local_address, parse_host_port
from auth_service.lifecycle import Owner

log = logging.getLogger(__name__)


class MetricsServer(Owner):
    """`GET /metrics` over HTTP/1.1 on its own port, served on the event loop (so
    collectors read asyncpg pools from the loop's thread). An async context manager;
    `aclose()` is idempotent."""

    def __init__(self, listen: str, registry: CollectorRegistry = REGISTRY) -> None:
        super().__init__(f"the metrics endpoint on {listen}")
        self.listen = listen
        self._registry = registry
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self._port = 0

    @property
    def port(self) -> int:
        return self._port

    @property
    def address(self) -> str:
        return local_address(self.listen, self._port)

    @property
    def url(self) -> str:
        return f"http://{self.address}/metrics"

    async def _start(self) -> None:
        host, port = parse_host_port(self.listen)
        self._server = await asyncio.start_server(
            self._accept, host.strip("[]"), port, limit=16 * 1024
        )
        self._port = int(self._server.sockets[0].getsockname()[1])
        log.info("metrics on %s", self.url)

    async def _close(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(server.wait_closed(), timeout=2)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            await self._serve_one(reader, writer)
        except (ConnectionError, TimeoutError, asyncio.IncompleteReadError, ValueError):
            pass  # a client that went away or sent garbage: nothing to answer
        finally:
            self._connections.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), timeout=1)

    async def _serve_one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async with asyncio.timeout(10):
            head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split()
        headers = {
            name.strip().lower(): value.strip()
            for name, sep, value in (line.partition(":") for line in lines[1:])
            if sep
        }
        if len(parts) != 3:
            status, content_type, body = "400 Bad Request", "text/plain", b"bad request\n"
        elif parts[0] not in {"GET", "HEAD"}:
            status, content_type, body = "405 Method Not Allowed", "text/plain", b"GET only\n"
        elif parts[1].partition("?")[0] != "/metrics":
            status, content_type, body = "404 Not Found", "text/plain", b"see /metrics\n"
        else:
            encoder, content_type = choose_encoder(headers.get("accept", ""))
            try:
                body = encoder(self._registry)
                status = "200 OK"
            except Exception:
                log.exception("collecting metrics failed")
                status, content_type, body = "500 Internal Server Error", "text/plain", b"error\n"
        writer.write(
            (
                f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            ).encode("latin-1")
        )
        if parts and parts[0] != "HEAD":
            writer.write(body)
        async with asyncio.timeout(10):
            await writer.drain()


def worker_listen(listen: str, index: int) -> str:
    """The metrics address of worker `index` of `serve --workers N`: the port plus the
    index, so each worker is its own scrape target (port 0 stays 0)."""
    host, port = parse_host_port(listen)
    if port == 0:
        return listen
    return format_host_port(host.strip("[]"), port + index)


@contextlib.asynccontextmanager
async def optional_server(listen: str | None) -> AsyncIterator[MetricsServer | None]:
    """A running MetricsServer on `listen`, or None when `listen` is unset."""
    if not listen:
        yield None
        return
    async with MetricsServer(listen) as server:
        yield server


__all__ = ["MetricsServer", "optional_server", "worker_listen"]
