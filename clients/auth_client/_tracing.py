"""OpenTelemetry spans of the client, when the application traces: the one place
that knows whether it does.

The library never configures tracing: it asks the OpenTelemetry API (extra
`tracing`) for the tracer provider the application installed. Without the API, or
while the provider is the API's default (no SDK), `tracer()` is None, and `span()` and
`rpc_span()` hand out `OFF`: a span that records nothing, is its own context manager
and is made once, so the callers have one code path whether or not the process
traces. The cache-hit fast path of `AuthClient.user_exists` has no span at all; while
the process traces, `Lookup` sends hits through its span instead (`is_live`).

Whether the process traces is asked once per operation (`span()`), through public
API only: while no SDK is installed, the API's tracer answers with its no-op span;
once one is, the provider is followed (so a provider that goes away, as in tests,
is noticed). The RPC an operation makes takes its span from the operation's
(`rpc_span(method, parent)`), so without tracing an RPC asks nothing at all.

Trace context goes on the wire as W3C `traceparent` only (gRPC metadata, Kafka
headers), written and read by `auth_client.contract`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from auth_client._errors import AuthClientError
from auth_client.contract import HEADER_TRACEPARENT, format_traceparent, parse_traceparent

try:
    from opentelemetry import trace
except ImportError:  # the `tracing` extra is not installed
    trace = None  # type: ignore[assignment]

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from contextlib import AbstractContextManager
    from types import TracebackType

    from opentelemetry.context import Context
    from opentelemetry.trace import Span, Tracer

    Metadata = tuple[tuple[str, str], ...] | None

_NAME = "auth_client"
_provider: object = None
_tracer: Tracer | None = None
# While no span has come from an SDK: the tracer the API hands out (a ProxyTracer,
# which turns into the SDK's tracer once the application installs one). Asking it
# for a span costs less than asking for the provider, which looks the environment
# up on every call while none is installed (~1-2 µs).
_probe: Tracer | None = None
_live = False  # the last span came from an SDK


def tracer() -> Tracer | None:
    """The tracer of the application's tracer provider, or None when the process
    does not trace (no OpenTelemetry API, or no SDK installed as the provider)."""
    global _provider, _tracer  # noqa: PLW0603 - follows the API's global provider
    if trace is None:
        return None
    provider = trace.get_tracer_provider()
    if provider is not _provider:
        _provider = provider
        live = not isinstance(provider, trace.ProxyTracerProvider | trace.NoOpTracerProvider)
        _tracer = provider.get_tracer(_NAME) if live else None
    return _tracer


class _Off:
    """The span of an operation while the process does not trace, and its own
    context manager: every method does nothing."""

    __slots__ = ()

    def __enter__(self) -> Span:
        return OFF

    def __exit__(self, *exc_info: object) -> None:
        return None

    def set_attribute(self, _key: str, _value: object) -> None:
        return None

    def add_event(self, _name: str, _attributes: object = None) -> None:
        return None


OFF: Span = cast("Span", _Off())
"""The span of every operation while the process does not trace."""
_OFF_BLOCK = cast("AbstractContextManager[Span]", OFF)


def is_live(span: Span) -> bool:
    """Whether `span` comes from a tracer (the process traced when it started)."""
    return span is not OFF


def span(name: str) -> AbstractContextManager[Span]:
    """The span `name`, current while the block runs (a child of the current span):
    one of the application's tracer, or `OFF` while the process does not trace."""
    global _live, _probe  # noqa: PLW0603 - follows the API's global provider
    if _live:  # follow the provider (one global read while one is installed)
        found = tracer()
        if found is not None:
            return found.start_as_current_span(name)
        _live = False  # the provider is gone (only tests can do that)
    if trace is None:
        return _OFF_BLOCK
    if _probe is None:
        _probe = trace.get_tracer(_NAME)
    first = _probe.start_span(name)
    if first is trace.INVALID_SPAN:  # no SDK installed: the API's no-op span
        return _OFF_BLOCK
    # An SDK provider was installed since the last span: `_probe` resolved to it and
    # is done; from now on `tracer()` says whether it is still there.
    _probe = None
    _live = tracer() is not None
    return trace.use_span(first, end_on_exit=True)


def rpc_span(method: str, parent: Span, links: Sequence[Span] = ()) -> AbstractContextManager[Span]:
    """The CLIENT span of one auth.v1.AuthService RPC, current while the block runs,
    while the process traces: a child of `parent` (the operation it serves; else of
    the first live span of `links`, else of the current span: the lookups of SHADOW
    mode pass none), linked to the live spans of `links`, with `rpc.grpc.status_code`
    from how the block ends (0, or the status of the `AuthClientError` it raises).
    `OFF` while the process does not trace (as `span()` last found)."""
    found = _tracer
    if found is None or trace is None:
        return _OFF_BLOCK
    if parent is OFF:  # e.g. a batch whose first lookup started before tracing did
        parent = next((s for s in links if s is not OFF), OFF)
    return _RpcBlock(
        found.start_as_current_span(
            f"auth.v1.AuthService/{method}",
            context=None if parent is OFF else trace.set_span_in_context(parent),
            kind=trace.SpanKind.CLIENT,
            links=[trace.Link(s.get_span_context()) for s in links if s is not OFF],
            attributes={
                "rpc.system": "grpc",
                "rpc.service": "auth.v1.AuthService",
                "rpc.method": method,
            },
        )
    )


class _RpcBlock:
    """An RPC's span block that records the gRPC status it ended with."""

    __slots__ = ("_block", "_span")

    def __init__(self, block: AbstractContextManager[Span]) -> None:
        self._block = block

    def __enter__(self) -> Span:
        self._span = self._block.__enter__()
        return self._span

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        if exc is None:
            self._span.set_attribute("rpc.grpc.status_code", 0)
        elif isinstance(exc, AuthClientError) and exc.code is not None:
            self._span.set_attribute("rpc.grpc.status_code", exc.code.value[0])
        return self._block.__exit__(exc_type, exc, tb)


def rpc_metadata(metadata: Metadata, span: Span) -> Metadata:
    """The call metadata `metadata` plus the `traceparent` of `span`, if it has one."""
    if span is OFF:
        return metadata
    parent = traceparent(span)
    if parent is None:
        return metadata
    return (*(metadata or ()), (HEADER_TRACEPARENT, parent))


def traceparent(span: Span) -> str | None:
    """The `traceparent` that makes `span` the parent on the other side."""
    if span is OFF:
        return None
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


def kafka_span(
    operation: str,
    topic: str,
    *,
    parent: str | None = None,
    partition: int | None = None,
    offset: int | None = None,
    group: str | None = None,
) -> AbstractContextManager[Span]:
    """The span of a Kafka `operation` ("process": CONSUMER, continuing the trace
    of `parent`, a traceparent; "send": PRODUCER, child of the current span), with
    the messaging attributes of OpenTelemetry's semantic conventions; `OFF` while
    the process does not trace."""
    found = tracer()
    if found is None or trace is None:
        return _OFF_BLOCK
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
    return found.start_as_current_span(
        f"{operation} {topic}",
        context=remote_parent(parent) if operation == "process" else None,
        kind=kind,
        attributes=attributes,
    )


def child_span(
    span: Span, name: str, attributes: Mapping[str, str | int]
) -> AbstractContextManager[Span]:
    """A child span `name` of the live `span` (current while the block runs), or
    `OFF` when `span` is `OFF`."""
    found = _tracer
    if span is OFF or found is None:
        return _OFF_BLOCK
    return found.start_as_current_span(name, attributes=attributes)


def with_traceparent(
    headers: Sequence[tuple[str, bytes]] | None, span: Span
) -> list[tuple[str, bytes]]:
    """`headers` with the `traceparent` of `span` instead of any earlier one
    (unchanged when `span` is `OFF`: the message keeps the trace it came with)."""
    if span is OFF:
        return list(headers or ())
    out = [(k, v) for k, v in headers or () if k != HEADER_TRACEPARENT]
    parent = traceparent(span)
    if parent is not None:
        out.append((HEADER_TRACEPARENT, parent.encode()))
    return out


__all__ = [
    "OFF",
    "child_span",
    "is_live",
    "kafka_span",
    "remote_parent",
    "rpc_metadata",
    "rpc_span",
    "span",
    "trace",
    "traceparent",
    "tracer",
    "with_traceparent",
]
