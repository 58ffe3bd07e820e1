"""The client the Django integration checks references with, one per process.

`configure()` takes a `SyncAuthClient`, or a function making one: a function is
called in the process that first needs a client, and again in a process forked
after that (a pre-fork server's worker), so each process has its own.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass

from django.core.exceptions import ImproperlyConfigured

from auth_client._config import FallbackPolicy
from auth_client._sync import SyncAuthClient

ClientOrFactory = SyncAuthClient | Callable[[], SyncAuthClient]


@dataclass(frozen=True, slots=True)
class _Settings:
    source: ClientOrFactory
    timeout: float | None
    fallback: FallbackPolicy | None


_settings: _Settings | None = None
_made: tuple[int, SyncAuthClient] | None = None  # (pid, client) made by the factory
_lock = threading.Lock()


def configure(
    client: ClientOrFactory | None,
    *,
    timeout: float | None = None,
    fallback: FallbackPolicy | None = None,
) -> None:
    """The client (or a function making one) that checks user references before
    saves; `timeout=` / `fallback=` override the client's for these checks. None
    removes the configuration (a client the factory made is not closed: close it
    with `current_client().close()` first)."""
    global _settings, _made  # noqa: PLW0603 - one configuration per process
    if client is not None and not (isinstance(client, SyncAuthClient) or callable(client)):
        raise TypeError("configure() takes a SyncAuthClient or a function returning one")
    with _lock:
        _settings = None if client is None else _Settings(client, timeout, fallback)
        _made = None


def current_client() -> SyncAuthClient:
    """This process's client (made by the configured factory on first use)."""
    return current()[0]


def current() -> tuple[SyncAuthClient, float | None, FallbackPolicy | None]:
    """The client for this process, with the timeout and fallback to use."""
    global _made  # noqa: PLW0603
    settings = _settings
    if settings is None:
        raise ImproperlyConfigured(
            "auth_client.integrations.django: call configure(client) at start-up "
            "before saving models with a UserReferenceField"
        )
    source = settings.source
    if isinstance(source, SyncAuthClient):
        return source, settings.timeout, settings.fallback
    pid = os.getpid()
    with _lock:
        if _made is None or _made[0] != pid:
            client = source()
            if not isinstance(client, SyncAuthClient):
                raise TypeError("the factory given to configure() must return a SyncAuthClient")
            _made = (pid, client)
        return _made[1], settings.timeout, settings.fallback
