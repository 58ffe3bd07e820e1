"""Waiting for the signal that ends a long-running command (serve, relay, dev)."""

from __future__ import annotations

import asyncio
import contextlib
import signal


async def wait_for_shutdown_signal() -> signal.Signals:
    """Wait until SIGTERM or SIGINT arrives; return which one."""
    loop = asyncio.get_running_loop()
    received: asyncio.Future[signal.Signals] = loop.create_future()

    def on_signal(sig: signal.Signals) -> None:
        if not received.done():
            received.set_result(sig)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        return await received
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(sig)
