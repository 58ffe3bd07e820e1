"""Registering servicers with request parsing that never raises.

grpcio's own parser answers a body that is not a valid message with UNKNOWN (and
protobuf internals in the details), and gRPC core refuses a body over its size
limit before any handler runs, so neither would be counted or logged like other
calls. Here the handler receives such a body as `MALFORMED` or `TOO_LARGE` and the
per-call wrapper (`rpc.handler`) answers INVALID_ARGUMENT / RESOURCE_EXHAUSTED.
gRPC core keeps a hard cap of `CORE_LIMIT_FACTOR` times the size limit, so memory
per request stays bounded.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf import message_factory

from auth_service.api.metrics import method_metrics

if TYPE_CHECKING:
    from google.protobuf.descriptor import ServiceDescriptor

CORE_LIMIT_FACTOR = 4


class _Marker:
    __slots__ = ("_name",)

    def __init__(self, name: str) -> None:
        self._name = name

    def __repr__(self) -> str:
        return self._name


MALFORMED: Any = _Marker("MALFORMED")
TOO_LARGE: Any = _Marker("TOO_LARGE")

_SERVICE_NAMES: dict[type, str] = {}
_LIMITS: dict[type, int] = {}


def service_name(servicer: object) -> str:
    """The gRPC service a servicer was registered as."""
    return _SERVICE_NAMES.get(type(servicer), type(servicer).__name__)


def max_request_bytes(servicer: object) -> int:
    """The request size limit a servicer was registered with."""
    return _LIMITS.get(type(servicer), 0)


def _lenient(parse: Callable[[bytes], Any], limit: int) -> Callable[[bytes], Any]:
    def deserialize(data: bytes) -> Any:
        if limit and len(data) > limit:
            return TOO_LARGE
        try:
            return parse(data)
        except Exception:  # DecodeError, bad UTF-8, nesting too deep, ...
            return MALFORMED

    return deserialize


def add_service(
    server: grpc.aio.Server,
    service: ServiceDescriptor,
    servicer: object,
    *,
    max_request_bytes: int = 0,
) -> None:
    """Register a servicer of unary methods (like the generated `add_*_to_server`),
    with request parsing that hands bad or oversized bodies to the handler."""
    handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}
    for method in service.methods:
        assert not method.client_streaming, method.full_name
        assert not method.server_streaming, method.full_name
        request_cls = message_factory.GetMessageClass(method.input_type)
        response_cls = message_factory.GetMessageClass(method.output_type)
        handlers[method.name] = grpc.unary_unary_rpc_method_handler(
            getattr(servicer, method.name),
            request_deserializer=_lenient(request_cls.FromString, max_request_bytes),
            response_serializer=response_cls.SerializeToString,
        )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(service.full_name, handlers),)
    )
    # Names for metrics and logs; the counters exist (at 0) from the start.
    _SERVICE_NAMES[type(servicer)] = service.full_name
    _LIMITS[type(servicer)] = max_request_bytes
    for method in service.methods:
        method_metrics(service.full_name, method.name)
    # As the generated code does: lets gRPC core match these methods without Python.
    server.add_registered_method_handlers(service.full_name, handlers)  # type: ignore[attr-defined]
