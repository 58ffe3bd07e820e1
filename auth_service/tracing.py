"""Traces of a server process: OpenTelemetry spans, exported over OTLP/HTTP.

Off unless the OTEL_* variables configure an exporter (`config` decides and
validates; `Settings.tracing`). `start()` installs the SDK's tracer provider: the SDK
reads the standard variables itself (OTEL_EXPORTER_OTLP_*ENDPOINT, _HEADERS,
_TIMEOUT, OTEL_TRACES_SAMPLER[_ARG], OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES,
OTEL_BSP_*), and `TRACER` is set. While `TRACER` is None every helper here is a
no-op that costs one test, here: callers never ask whether tracing is on, and no
code path exists twice. `TRACER` follows OpenTelemetry's own process-wide tracer
provider (there is one per process by OpenTelemetry's design).

The spans (names as OpenTelemetry's semantic conventions spell them):

    auth.v1.AuthService/UserExists      SERVER, per call (api/rpc.py): rpc.*, caller,
                                        status; child of the caller's `traceparent`
      SELECT users                      CLIENT, per query (store): db.*; a query
                                        shared by several calls (store/lookup.py) is
                                        the child of the first and links every one
    auth.v1.UserAdminService/DeleteUser
      BEGIN users, outbox               CLIENT: the deletion's transaction; its
                                        `traceparent` is stored with the outbox row
    send user_deleted                   PRODUCER (relay), child of the stored
                                        `traceparent`; the Kafka record carries its own

May be imported by every wing; imports none.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterable, Sequence
from contextvars import Token
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Link, Span, SpanContext, SpanKind, Status, StatusCode, Tracer

from auth_client.contract import HEADER_TRACEPARENT, format_traceparent, parse_traceparent

log = logging.getLogger(__name__)

TRACER: Tracer | None = None
"""The server's tracer while tracing is on, else None."""

SERVICE_NAME = "auth-service"
_SCOPE = "auth_service"
# What `query` yields while not tracing: a span that records nothing.
_NO_SPAN: contextlib.AbstractContextManager[Span] = contextlib.nullcontext(trace.INVALID_SPAN)


def start() -> Any:
    """Install the SDK's tracer provider (exporting over OTLP/HTTP as the OTEL_*
    variables say) as the process's global one, and set `TRACER`. Returns the
    provider, for `stop()`."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # noqa: PLC0415
        OTLPSpanExporter,
    )
    from opentelemetry.sdk.resources import Resource  # noqa: PLC0415
    from opentelemetry.sdk.trace import TracerProvider  # noqa: PLC0415
    from opentelemetry.sdk.trace.export import BatchSpanProcessor  # noqa: PLC0415

    resource = Resource.create()  # OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES
    if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
        resource = resource.merge(Resource({"service.name": SERVICE_NAME}))
    provider = TracerProvider(resource=resource)  # the sampler of OTEL_TRACES_SAMPLER
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    use(provider.get_tracer(_SCOPE))
    log.info(
        "tracing on: spans of service %s exported over OTLP/HTTP",
        resource.attributes.get("service.name"),
    )
    return provider


def stop(provider: Any) -> None:
    """Export what is buffered and stop (blocks up to the exporter's timeout)."""
    use(None)
    provider.shutdown()


@contextlib.asynccontextmanager
async def exporting(enabled: bool) -> AsyncIterator[None]:
    """Tracing on (when `enabled`: `Settings.tracing`) for the duration of a command;
    the spans still buffered are exported on exit. Each command's composition root
    enters it first, so it closes last."""
    if not enabled:
        yield
        return
    provider = start()
    try:
        yield
    finally:
        await asyncio.to_thread(stop, provider)


def use(tracer: Tracer | None) -> None:
    """Trace with `tracer` from now on (None: stop tracing). Tests pass a tracer of
    their own provider."""
    global TRACER  # noqa: PLW0603 - the process's one switch
    TRACER = tracer


# -- trace context ---------------------------------------------------------------


def traceparent(span: Span) -> str | None:
    """The W3C `traceparent` naming `span` as the parent (None for an invalid span)."""
    ctx = span.get_span_context()
    if not ctx.is_valid:
        return None
    return format_traceparent(ctx.trace_id, ctx.span_id, ctx.trace_flags.sampled)


def current_traceparent() -> str | None:
    """The `traceparent` of the current span, when tracing."""
    if TRACER is None:
        return None
    return traceparent(trace.get_current_span())


def current_span_context() -> SpanContext | None:
    """The current span's context (what a shared query links to), when tracing."""
    if TRACER is None:
        return None
    ctx = trace.get_current_span().get_span_context()
    return ctx if ctx.is_valid else None


def remote_parent(value: str | bytes | None) -> otel_context.Context | None:
    """A context whose parent is the remote span `value` (a traceparent) names."""
    parsed = parse_traceparent(value)
    if parsed is None:
        return None
    trace_id, span_id, flags = parsed
    parent = SpanContext(trace_id, span_id, is_remote=True, trace_flags=trace.TraceFlags(flags & 1))
    return trace.set_span_in_context(trace.NonRecordingSpan(parent))


def _metadata_traceparent(metadata: Iterable[tuple[str, str | bytes]] | None) -> str | None:
    for key, value in metadata or ():
        if key == HEADER_TRACEPARENT and isinstance(value, str):
            return value
    return None


# -- spans -------------------------------------------------------------------------


# gRPC codes that mean the server failed (OpenTelemetry's rule for SERVER spans);
# the others are answers (NOT_FOUND, INVALID_ARGUMENT, ...).
_SERVER_ERRORS = frozenset({2, 4, 12, 13, 14, 15})  # UNKNOWN .. DATA_LOSS


class ServerSpan:
    """The SERVER span of one call, current until `end`."""

    __slots__ = ("_span", "_token")

    def __init__(self, span: Span, token: Token[otel_context.Context]) -> None:
        self._span = span
        self._token = token

    def end(self, caller: str, code: int, message: str) -> None:
        """Name the caller and the status, end the span, restore the context."""
        span = self._span
        span.set_attribute("auth.caller", caller)
        span.set_attribute("rpc.grpc.status_code", code)
        if code in _SERVER_ERRORS:
            span.set_status(Status(StatusCode.ERROR, message))
        span.end()
        otel_context.detach(self._token)


class _NoServerSpan(ServerSpan):
    __slots__ = ()

    def __init__(self) -> None:
        pass

    def end(self, caller: str, code: int, message: str) -> None:
        pass


_NO_SERVER_SPAN = _NoServerSpan()


def server_span(
    service: str, method: str, metadata: Iterable[tuple[str, str | bytes]] | None
) -> ServerSpan:
    """Start the SERVER span of one call and make it current (a no-op while not
    tracing). Its parent is the caller's `traceparent`, if any."""
    tracer = TRACER
    if tracer is None:
        return _NO_SERVER_SPAN
    span = tracer.start_span(
        f"{service}/{method}",
        context=remote_parent(_metadata_traceparent(metadata)),
        kind=SpanKind.SERVER,
        attributes={"rpc.system": "grpc", "rpc.service": service, "rpc.method": method},
    )
    return ServerSpan(span, otel_context.attach(trace.set_span_in_context(span)))


def note(name: str, value: bool | int | str) -> None:
    """Set attribute `name` on the current span (e.g. a state-cache hit), when tracing."""
    if TRACER is not None:
        trace.get_current_span().set_attribute(name, value)


def query(
    operation: str,
    table: str,
    *,
    served: Sequence[SpanContext | None] = (),
    **attributes: int | str,
) -> contextlib.AbstractContextManager[Span]:
    """The CLIENT span of one database operation (`operation` of `table`); while not
    tracing, a span that records nothing. `served`: the calls a shared query answers:
    the span is a child of the first and links each of them."""
    tracer = TRACER
    if tracer is None:
        return _NO_SPAN
    calls = [ctx for ctx in served if ctx is not None]
    if not calls:  # the query of the current call alone
        current = current_span_context()
        calls = [current] if current is not None else []
    return tracer.start_as_current_span(
        f"{operation} {table}",
        context=trace.set_span_in_context(trace.NonRecordingSpan(calls[0])) if calls else None,
        kind=SpanKind.CLIENT,
        links=[Link(ctx) for ctx in calls],
        attributes={
            "db.system.name": "postgresql",
            "db.operation.name": operation,
            "db.collection.name": table,
            **attributes,
        },
    )


class PublishSpan:
    """The PRODUCER span of publishing one event (the relay), a child of the
    deletion's stored `traceparent`; `end` it once the brokers answered."""

    __slots__ = ("_span",)

    def __init__(self, span: Span) -> None:
        self._span = span

    def traceparent(self, stored: str | None) -> str | None:  # noqa: ARG002 - see below
        """The `traceparent` the Kafka record carries: this span's."""
        return traceparent(self._span)

    def end(self, error: BaseException | None) -> None:
        """Failed (the relay will try again, in another span) or acknowledged."""
        span = self._span
        if error is not None:
            span.record_exception(error)
            span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
        span.end()


class _NoPublishSpan(PublishSpan):
    __slots__ = ()

    def __init__(self) -> None:
        pass

    def traceparent(self, stored: str | None) -> str | None:
        """Not tracing (or an event stored without a trace): the stored one as it is."""
        return stored

    def end(self, error: BaseException | None) -> None:
        pass


_NO_PUBLISH_SPAN = _NoPublishSpan()


def publish_span(topic: str, parent: str | None, event_id: str) -> PublishSpan:
    """Start the PRODUCER span of publishing one event; a no-op while not tracing,
    or for an event stored without a trace."""
    tracer = TRACER
    if tracer is None:
        return _NO_PUBLISH_SPAN
    context = remote_parent(parent)
    if context is None:
        return _NO_PUBLISH_SPAN
    return PublishSpan(
        tracer.start_span(
            f"send {topic}",
            context=context,
            kind=SpanKind.PRODUCER,
            attributes={
                "messaging.system": "kafka",
                "messaging.operation.type": "send",
                "messaging.destination.name": topic,
                "messaging.message.id": event_id,
            },
        )
    )


__all__ = [
    "SERVICE_NAME",
    "TRACER",
    "PublishSpan",
    "ServerSpan",
    "current_span_context",
    "current_traceparent",
    "exporting",
    "note",
    "publish_span",
    "query",
    "remote_parent",
    "server_span",
    "start",
    "stop",
    "traceparent",
    "use",
]
