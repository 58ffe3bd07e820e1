"""OpenTelemetry spans of the client, when the application traces.

The library never configures tracing: it asks the OpenTelemetry API (extra
`tracing`) for the tracer provider the application installed. Without the API, or
while the provider is the API's default (no SDK), `tracer()` is None and nothing is
recorded: the callers keep their untraced code paths, and the cache-hit fast path of
`AuthClient.user_exists` stays as it is.

Trace context goes on the wire as W3C `traceparent` only (gRPC metadata, Kafka
headers), written and read by `auth_client.contract`.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

from auth_client.contract import HEADER_TRACEPARENT, format_traceparent, parse_traceparent

try:
    from opentelemetry import context as otel_context
    from opentelemetry import trace
except ImportError:  # the `tracing` extra is not installed
    trace = None  # type: ignore[assignment]
    otel_context = None  # type: ignore[assignment]

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    from opentelemetry.context import Context
    from opentelemetry.trace import Span, SpanContext, Tracer

_NAME = "auth_client"
_UNKNOWN = object()
_provider: object = None
_tracer: Tracer | None = None


def tracer() -> Tracer | None:
    """The tracer of the application's tracer provider, or None when the process
    does not trace (no OpenTelemetry API, or no SDK installed as the provider)."""
    global _provider, _tracer  # noqa: PLW0603 - follows the API's global provider
    if trace is None:
        return None
    # The provider `trace.set_tracer_provider` installed, read directly: while there
    # is none, `get_tracer_provider()` looks the environment up on every call
    # (OTEL_PYTHON_TRACER_PROVIDER), about 2 µs on each cache miss for nothing.
    provider: Any = getattr(trace, "_TRACER_PROVIDER", _UNKNOWN)
    if provider is None:
        return None
    if provider is _UNKNOWN:  # an API that no longer has that global
        provider = trace.get_tracer_provider()
    if provider is not _provider:
        _provider = provider
        live = not isinstance(provider, trace.ProxyTracerProvider | trace.NoOpTracerProvider)
        _tracer = provider.get_tracer(_NAME) if live else None
    return _tracer


def traceparent(span: Span) -> str | None:
    """The `traceparent` that makes `span` the parent on the other side."""
    ctx = span.get_span_context()
    if not ctx.is_valid:
        return None
    return format_traceparent(ctx.trace_id, ctx.span_id, ctx.trace_flags.sampled)


def remote_parent(value: str | bytes | None) -> Context | None:
    """A context whose current span is the remote parent `value` names, or None."""
    parsed = parse_traceparent(value)
    if parsed is None or trace is None:
        return None
    trace_id, span_id, flags = parsed
    parent = trace.SpanContext(
        trace_id, span_id, is_remote=True, trace_flags=trace.TraceFlags(flags & 1)
    )
    return trace.set_span_in_context(trace.NonRecordingSpan(parent))


def link(span: Span) -> Any:
    """A Link to `span` (typed Any: `trace` may be missing at type-check time)."""
    assert trace is not None
    return trace.Link(span.get_span_context())


def context_of(span: Span) -> Context:
    assert trace is not None
    return trace.set_span_in_context(span)


def current_context() -> SpanContext | None:
    if trace is None:
        return None
    ctx = trace.get_current_span().get_span_context()
    return ctx if ctx.is_valid else None


@contextlib.contextmanager
def kafka_span(
    tracer: Tracer,
    operation: str,
    topic: str,
    *,
    parent: str | None = None,
    partition: int | None = None,
    offset: int | None = None,
    group: str | None = None,
) -> Iterator[Span]:
    """The span of a Kafka `operation` ("process": CONSUMER, continuing the trace
    of `parent`, a traceparent; "send": PRODUCER, child of the current span), with
    the messaging attributes of OpenTelemetry's semantic conventions."""
    assert trace is not None
    attributes: dict[str, str | int] = {
        "messaging.system": "kafka",
        "messaging.operation.type": operation,
        "messaging.destination.name": topic,
    }
    if partition is not None:
        attributes["messaging.destination.partition.id"] = str(partition)
    if offset is not None:
        attributes["messaging.kafka.offset"] = offset
    if group is not None:
        attributes["messaging.consumer.group.name"] = group
    kind = trace.SpanKind.CONSUMER if operation == "process" else trace.SpanKind.PRODUCER
    with tracer.start_as_current_span(
        f"{operation} {topic}",
        context=remote_parent(parent) if operation == "process" else None,
        kind=kind,
        attributes=attributes,
    ) as span:
        yield span


def with_traceparent(
    headers: Sequence[tuple[str, bytes]] | None, span: Span
) -> list[tuple[str, bytes]]:
    """`headers` with the `traceparent` of `span` instead of any earlier one."""
    out = [(k, v) for k, v in headers or () if k != HEADER_TRACEPARENT]
    parent = traceparent(span)
    if parent is not None:
        out.append((HEADER_TRACEPARENT, parent.encode()))
    return out


def record_failure(span: Span, error: BaseException) -> None:
    """Mark `span` failed by `error` (an exception event and an ERROR status)."""
    assert trace is not None
    span.record_exception(error)
    span.set_status(trace.Status(trace.StatusCode.ERROR, f"{type(error).__name__}: {error}"))


__all__ = [
    "context_of",
    "current_context",
    "kafka_span",
    "link",
    "otel_context",
    "record_failure",
    "remote_parent",
    "trace",
    "traceparent",
    "tracer",
    "with_traceparent",
]
