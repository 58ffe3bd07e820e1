"""Fixtures for the tracing tests: an OpenTelemetry SDK whose spans stay in memory,
as the server's tracer (`auth_service.tracing.use`) and, for the client library, as
the process's global tracer provider (what an application installs)."""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from opentelemetry.util._once import Once

from auth_client.contract import format_traceparent
from auth_service import tracing
from tests.conftest import eventually


class Spans:
    """The finished spans of one test."""

    def __init__(self, exporter: InMemorySpanExporter, provider: TracerProvider) -> None:
        self.exporter = exporter
        self.provider = provider

    def all(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def named(self, name: str, kind: SpanKind | None = None) -> list[ReadableSpan]:
        return [s for s in self.all() if s.name == name and kind in {None, s.kind}]

    async def settled(self, name: str, count: int, timeout: float = 5.0) -> list[ReadableSpan]:
        """The spans called `name` once there are `count` of them. A refused call's
        server span ends just after its status went out (`context.abort` sends it,
        then raises through the wrapper), so the caller can see the error first."""

        async def enough() -> bool:
            return len(self.named(name)) >= count

        await eventually(enough, timeout=timeout, interval=0.01)
        return self.named(name)

    def one(self, name: str, kind: SpanKind | None = None) -> ReadableSpan:
        found = self.named(name, kind)
        assert len(found) == 1, [s.name for s in self.all()]
        return found[0]


def _provider() -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


@pytest.fixture
def server_spans() -> Iterator[Spans]:
    """Tracing on in the server code of this process (as `serve` with an OTLP
    endpoint has it), the spans kept in memory."""
    provider, exporter = _provider()
    tracing.use(provider.get_tracer("test"))
    try:
        yield Spans(exporter, provider)
    finally:
        tracing.use(None)
        provider.shutdown()


@pytest.fixture
def app_spans(server_spans: Spans) -> Iterator[Spans]:
    """As `server_spans`, and the same provider installed as the global one, as an
    application that traces does (so auth_client traces too). Reset afterwards:
    the API allows one global provider per process, tests need a fresh one each."""
    trace._TRACER_PROVIDER_SET_ONCE = Once()
    trace.set_tracer_provider(server_spans.provider)
    try:
        yield server_spans
    finally:
        trace._TRACER_PROVIDER = None
        trace._TRACER_PROVIDER_SET_ONCE = Once()


def new_traceparent() -> tuple[str, int, int]:
    """A sampled traceparent of a made-up caller: (value, trace id, span id)."""
    trace_id, span_id = random.getrandbits(128) | 1, random.getrandbits(64) | 1
    return format_traceparent(trace_id, span_id, sampled=True), trace_id, span_id
