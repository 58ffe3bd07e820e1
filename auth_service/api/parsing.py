"""Registering servicers: request parsing that never raises, and each method behind
its server's per-call path (`rpc.CallPath`).

grpcio's own parser answers a body that is not a valid message with UNKNOWN (and
protobuf internals in the details), and gRPC core refuses a body over its size
limit before any handler runs, so neither would be counted or logged like other
calls. Here the handler receives such a body as `MALFORMED` or `TOO_LARGE` and the
call path answers INVALID_ARGUMENT / RESOURCE_EXHAUSTED. gRPC core keeps a hard cap
of `CORE_LIMIT_FACTOR` times the size limit (refused by gRPC core itself, before
Python sees the body), so memory per request stays bounded.

Nothing here is kept per process: names and limits belong to the server whose
`CallPath` registered the service.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf import message_factory

from auth_service.api.rpc import MALFORMED, TOO_LARGE, CallPath

if TYPE_CHECKING:
    from google.protobuf.descriptor import ServiceDescriptor

CORE_LIMIT_FACTOR = 4


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
    server: grpc.aio.Server, service: ServiceDescriptor, servicer: object, path: CallPath
) -> None:
    """Register a servicer of unary and server-streaming methods (like the
    generated `add_*_to_server`), each behind `path`, with request parsing that
    hands bad or oversized bodies to the path."""
    handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}
    limit = path.max_request_bytes
    for method in service.methods:
        assert not method.client_streaming, method.full_name
        request_cls = message_factory.GetMessageClass(method.input_type)
        response_cls = message_factory.GetMessageClass(method.output_type)
        fn = getattr(servicer, method.name)
        options: dict[str, Any] = {
            "request_deserializer": _lenient(request_cls.FromString, limit),
            "response_serializer": response_cls.SerializeToString,
        }
        if method.server_streaming:
            handlers[method.name] = grpc.unary_stream_rpc_method_handler(
                path.stream(service.full_name, method.name, fn), **options
            )
        else:
            handlers[method.name] = grpc.unary_unary_rpc_method_handler(
                path.method(service.full_name, method.name, fn), **options
            )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(service.full_name, handlers),)
    )
    # As the generated code does: lets gRPC core match these methods without Python.
    server.add_registered_method_handlers(service.full_name, handlers)  # type: ignore[attr-defined]
