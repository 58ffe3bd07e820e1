"""The wire: channel construction, the three read RPCs and the export a local
replica loads from, response decoding, and the bound on RPCs in flight.

Every RPC error passes through `raise_for_rpc_error` here, inside the caller's
circuit-breaker guard, so the breaker sees library errors with their status. A
call first takes one of `max_rpcs_in_flight` slots (`slot()`, outside the breaker:
waiting for a slot says nothing about the server).

Each RPC runs in the CLIENT span `_tracing.rpc_span` makes from the span of the
operation it serves (`parent`; nothing at all while the application does not
trace); its W3C `traceparent` goes in the call's metadata, and a batched RPC links
the lookups it answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from typing import TYPE_CHECKING, Any

import grpc

from auth_client import _tracing
from auth_client._config import ChannelConfig
from auth_client._errors import (
    AuthClientError,
    DeadlineExceededError,
    UserNotFoundError,
    raise_for_rpc_error,
)
from auth_client._models import ACTIVE, DELETED, NOT_FOUND, User
from auth_client.contract import (
    auth_pb2,
    auth_pb2_grpc,
    bearer_metadata,
    replication_pb2,
    replication_pb2_grpc,
    to_datetime,
)

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, AsyncIterator, Sequence

    from opentelemetry.trace import Span

    from auth_client._config import TLSConfig
    from auth_client._metrics import Counters

USER_AGENT = "auth-client-python"
_KNOWN_STATES = frozenset({ACTIVE, DELETED, NOT_FOUND})


def _options(
    config: ChannelConfig | None, tls: TLSConfig | None
) -> tuple[list[tuple[str, str | int]], grpc.ChannelCredentials | None]:
    """The channel options AuthClient and SyncAuthClient configure, and the TLS
    credentials (None: plaintext)."""
    if config is None:
        config = ChannelConfig()
    options: list[tuple[str, str | int]] = [
        *config.options(),
        ("grpc.primary_user_agent", USER_AGENT),
    ]
    if tls is None:
        return options, None
    root, key, chain = tls.load()
    if tls.server_name:
        options.append(("grpc.ssl_target_name_override", tls.server_name))
    return options, grpc.ssl_channel_credentials(root, key, chain)


def create_channel(
    target: str,
    *,
    tls: TLSConfig | None = None,
    config: ChannelConfig | None = None,
    interceptors: Sequence[grpc.aio.ClientInterceptor] = (),
) -> grpc.aio.Channel:
    """A `grpc.aio` channel to auth-service at `target`, configured as AuthClient
    configures its own: round-robin balancing, gRPC retries of UNAVAILABLE for the
    read methods, keepalive, bounded reconnect backoff, TLS when `tls` is given.
    For the admin API or to share one channel (`AuthClient(channel=...)`); the
    caller closes it."""
    options, credentials = _options(config, tls)
    if credentials is None:
        return grpc.aio.insecure_channel(target, options, interceptors=interceptors)
    return grpc.aio.secure_channel(target, credentials, options, interceptors=interceptors)


def create_sync_channel(
    target: str,
    *,
    tls: TLSConfig | None = None,
    config: ChannelConfig | None = None,
    interceptors: Sequence[grpc.UnaryUnaryClientInterceptor[Any, Any]] = (),
) -> grpc.Channel:
    """The same channel on grpc's synchronous stack, for `SyncAuthClient` (which
    survives fork(): grpc.aio does not)."""
    options, credentials = _options(config, tls)
    if credentials is None:
        channel = grpc.insecure_channel(target, options)
    else:
        channel = grpc.secure_channel(target, credentials, options)
    return grpc.intercept_channel(channel, *interceptors) if interceptors else channel


def _state(exists: bool, state: int) -> int:
    if state in _KNOWN_STATES:
        return state
    return ACTIVE if exists else NOT_FOUND


class Transport:
    """Stubs, the per-call metadata (the bearer token) and the in-flight bound."""

    __slots__ = ("_counters", "_limit", "_metadata", "_replication", "_slots", "_stub")

    def __init__(
        self,
        channel: grpc.aio.Channel,
        token: str | None,
        counters: Counters,
        max_in_flight: int = 100,
    ) -> None:
        self._stub = auth_pb2_grpc.AuthServiceStub(channel)
        self._replication = replication_pb2_grpc.UserReplicationServiceStub(channel)
        self._metadata: tuple[tuple[str, str], ...] | None = bearer_metadata(token) or None
        self._counters = counters
        self._limit = max_in_flight
        self._slots = asyncio.Semaphore(max_in_flight)

    @contextlib.asynccontextmanager
    async def slot(self, timeout: float) -> AsyncIterator[float]:
        """Hold one of the in-flight slots for an RPC; yields the time left of
        `timeout` after waiting. DeadlineExceededError when no slot frees up in time
        (raised outside the breaker: a busy client is not a failing server)."""
        slots = self._slots
        if slots.locked():
            started = time.monotonic()
            try:
                async with asyncio.timeout(timeout):
                    await slots.acquire()
            except TimeoutError:
                raise DeadlineExceededError(
                    f"no free call slot within {timeout}s: {self._limit} calls in flight"
                    " on this client's channel (ChannelConfig.max_rpcs_in_flight)"
                ) from None
            timeout = max(timeout - (time.monotonic() - started), 0.001)
        else:
            await slots.acquire()
        try:
            yield timeout
        finally:
            slots.release()

    def __repr__(self) -> str:  # never show the token
        return f"Transport(authenticated={self._metadata is not None})"

    async def states(
        self,
        ids: Sequence[uuid.UUID],
        budget: float,
        parent: Span = _tracing.OFF,
        links: Sequence[Span] = (),
    ) -> list[int]:
        """The state of each id, in order: UserExists for one id, else
        BatchUserExists (the caller keeps batches within the server's cap).
        `parent`: the span of the operation it serves; `links`: the lookup spans
        this RPC answers."""
        counters = self._counters
        counters.rpcs += 1
        counters.ids_sent += len(ids)
        if len(ids) == 1:
            method = "UserExists"
            with _tracing.rpc_span(method, parent, links) as span:
                try:
                    reply = await self._stub.UserExists(
                        auth_pb2.UserExistsRequest(user_id=str(ids[0])),
                        timeout=budget,
                        metadata=_tracing.rpc_metadata(self._metadata, span),
                    )
                except Exception as exc:
                    raise_for_rpc_error(exc, method, ids)
                return [_state(reply.exists, reply.state)]
        method = "BatchUserExists"
        with _tracing.rpc_span(method, parent, links) as span:
            texts = [str(i) for i in ids]
            try:
                batch = await self._stub.BatchUserExists(
                    auth_pb2.BatchUserExistsRequest(user_ids=texts, states_only=True),
                    timeout=budget,
                    metadata=_tracing.rpc_metadata(self._metadata, span),
                )
            except Exception as exc:
                raise_for_rpc_error(exc, method, ids)
            return _batch_states(batch, texts)

    async def get_user(
        self, user_id: uuid.UUID, budget: float, parent: Span = _tracing.OFF
    ) -> User | None:
        """The active user's profile, or None (never created, or deleted).
        `parent`: the span of the operation it serves."""
        self._counters.rpcs += 1
        self._counters.ids_sent += 1
        with _tracing.rpc_span("GetUser", parent) as span:
            try:
                try:
                    reply = await self._stub.GetUser(
                        auth_pb2.GetUserRequest(user_id=str(user_id)),
                        timeout=budget,
                        metadata=_tracing.rpc_metadata(self._metadata, span),
                    )
                except Exception as exc:
                    raise_for_rpc_error(exc, "GetUser", (user_id,))
            except UserNotFoundError:
                return None  # an answer: the RPC's span ends with status 0
            user = reply.user
            return User(
                id=uuid.UUID(user.id) if user.id else user_id,
                username=user.username,
                display_name=user.display_name,
                created_at=to_datetime(user.created_at),
                updated_at=to_datetime(user.updated_at),
            )

    async def export(
        self, page_size: int, timeout: float
    ) -> AsyncGenerator[replication_pb2.ExportUserStatesResponse, None]:
        """ExportUserStates' pages (a local replica's load; not counted as a lookup
        RPC, and not through the breaker: a load failure is the replica's)."""
        call = self._replication.ExportUserStates(
            replication_pb2.ExportUserStatesRequest(page_size=page_size),
            timeout=timeout,
            metadata=self._metadata,
        )
        try:
            async for page in call:
                yield page
        except Exception as exc:
            raise_for_rpc_error(exc, "ExportUserStates")
        finally:
            call.cancel()  # nothing once it is done; a reader that stopped early ends it


def _batch_states(batch: auth_pb2.BatchUserExistsResponse, texts: list[str]) -> list[int]:
    """The states a BatchUserExists reply gives for `texts`, in order."""
    packed = batch.states
    if len(packed) == len(texts):  # a 0.2+ server honoured states_only
        return [s if s in _KNOWN_STATES else NOT_FOUND for s in packed]
    results = batch.results  # an older server: one result message per id
    if len(results) != len(texts) or any(
        r.user_id != t for r, t in zip(results, texts, strict=True)
    ):
        raise AuthClientError(
            "auth-service BatchUserExists: the reply does not match the request "
            f"({len(results)} results for {len(texts)} ids)"
        )
    return [_state(r.exists, r.state) for r in results]
