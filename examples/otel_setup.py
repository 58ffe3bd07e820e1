"""Tracing in a service's own process, as the examples do it: the application, not
auth_client, installs an OpenTelemetry SDK.

auth_client records its spans (a lookup, its RPC, a consumed `user_deleted` event)
through the OpenTelemetry API (`pip install 'auth-client[tracing]'`) and only once
the application has installed a tracer provider; it never reads the environment
itself. This helper installs one when the standard variables name an OTLP/HTTP
receiver, and does nothing otherwise (nor when the SDK is not installed):

    OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318 .venv/bin/python examples/...

Needs `opentelemetry-sdk` and `opentelemetry-exporter-otlp-proto-http` (the
server's install has both). Shared by the examples; see docs/tracing.md.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from typing import Any

try:
    from opentelemetry import trace
except ImportError:  # auth-client without the tracing extra
    trace = None  # type: ignore[assignment]


def start_tracing(service_name: str) -> Callable[[], None]:
    """Install an SDK exporting over OTLP/HTTP when OTEL_EXPORTER_OTLP_ENDPOINT (or
    OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) is set; returns what flushes it at exit."""
    endpoint = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get(
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
    )
    if not endpoint or trace is None:
        return lambda: None
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # noqa: PLC0415
        OTLPSpanExporter,
    )
    from opentelemetry.sdk.resources import Resource  # noqa: PLC0415
    from opentelemetry.sdk.trace import TracerProvider  # noqa: PLC0415
    from opentelemetry.sdk.trace.export import BatchSpanProcessor  # noqa: PLC0415

    name = os.environ.get("OTEL_SERVICE_NAME") or service_name
    provider = TracerProvider(resource=Resource.create({"service.name": name}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    return provider.shutdown


def span(name: str) -> contextlib.AbstractContextManager[Any]:
    """A span of the application's own (a no-op without OpenTelemetry)."""
    if trace is None:
        return contextlib.nullcontext()
    return trace.get_tracer("examples").start_as_current_span(name)
