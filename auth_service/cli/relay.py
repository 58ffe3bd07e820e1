"""The composition root of `auth-service relay`: each part entered in order on one
exit stack, so the stop order (SIGTERM / SIGINT) is the reverse by construction."""

from __future__ import annotations

import contextlib
import logging

from auth_service import tracing
from auth_service.api.metrics_endpoint import optional_server
from auth_service.config import Settings
from auth_service.events.relay import Relay
from auth_service.events.relay_config import RelayConfig
from auth_service.signals import wait_for_shutdown_signal

log = logging.getLogger("auth_service.events.relay")


async def run_relay(settings: Settings) -> int:
    """Run the relay until SIGTERM/SIGINT: tracing export (last out: the spans still
    buffered) -> metrics endpoint -> relay."""
    async with contextlib.AsyncExitStack() as stack:
        await stack.enter_async_context(tracing.exporting(settings.tracing))
        await stack.enter_async_context(optional_server(settings.metrics_listen))
        await stack.enter_async_context(Relay(RelayConfig.from_settings(settings)))
        sig = await wait_for_shutdown_signal()
        log.info("received %s: stopping the relay", sig.name)
    return 0
