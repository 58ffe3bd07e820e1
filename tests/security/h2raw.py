"""A few lines of raw HTTP/2 (the `h2` library over a socket) to send gRPC requests
no well-behaved client would: bad length prefixes, flags, bodies and headers."""

from __future__ import annotations

import asyncio
import contextlib
import struct
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.events

PATH = "/auth.v1.AuthService/UserExists"


def frame(payload: bytes, *, flag: int = 0, length: int | None = None) -> bytes:
    """One gRPC length-prefixed message: flag byte, 4-byte big-endian length, payload."""
    return bytes([flag]) + struct.pack(">I", len(payload) if length is None else length) + payload


@dataclass
class Answer:
    http_status: str | None = None
    grpc_status: int | None = None
    grpc_message: str = ""
    reset: int | None = None  # RST_STREAM error code
    goaway: int | None = None
    closed: bool = False  # the server closed the connection
    timed_out: bool = False
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def connection_error(self) -> bool:
        return self.reset is not None or self.goaway is not None or self.closed


async def send(
    port: int,
    body: bytes | None,
    headers: list[tuple[bytes, bytes]] = (),  # type: ignore[assignment]
    *,
    path: str = PATH,
    timeout: float = 10.0,
) -> Answer:
    """Open a connection, send one request (HEADERS, then `body` as DATA ending the
    stream; None = no DATA frame), and read until the stream ends."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    config = h2.config.H2Configuration(
        client_side=True,
        header_encoding=None,
        validate_outbound_headers=False,
        normalize_outbound_headers=False,
    )
    conn = h2.connection.H2Connection(config)
    conn.initiate_connection()
    stream = conn.get_next_available_stream_id()
    request_headers = [
        (b":method", b"POST"),
        (b":scheme", b"http"),
        (b":path", path.encode()),
        (b":authority", b"127.0.0.1"),
        (b"content-type", b"application/grpc"),
        (b"te", b"trailers"),
        *headers,
    ]
    conn.send_headers(stream, request_headers, end_stream=body is None)
    if body is not None:
        conn.send_data(stream, body, end_stream=True)
    writer.write(conn.data_to_send())
    answer = Answer()
    try:
        async with asyncio.timeout(timeout):
            await writer.drain()
            while not _finished(answer):
                data = await reader.read(65536)
                if not data:
                    answer.closed = True
                    break
                for event in conn.receive_data(data):
                    _record(answer, event)
                writer.write(conn.data_to_send())
                await writer.drain()
    except TimeoutError:
        answer.timed_out = True
    except ConnectionError:
        answer.closed = True
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    return answer


def _finished(answer: Answer) -> bool:
    return answer.grpc_status is not None or answer.connection_error


def _record(answer: Answer, event: h2.events.Event) -> None:
    if isinstance(event, h2.events.ResponseReceived | h2.events.TrailersReceived):
        for key, value in event.headers:
            answer.headers[key.decode()] = value.decode(errors="replace")
        answer.http_status = answer.headers.get(":status")
        if "grpc-status" in answer.headers:
            answer.grpc_status = int(answer.headers["grpc-status"])
            answer.grpc_message = answer.headers.get("grpc-message", "")
    elif isinstance(event, h2.events.StreamReset):
        answer.reset = event.error_code
    elif isinstance(event, h2.events.ConnectionTerminated):
        answer.goaway = event.error_code


async def send_raw_bytes(port: int, data: bytes, timeout: float = 10.0) -> bytes:
    """Write arbitrary bytes to the port; return whatever comes back before close."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    out = b""
    try:
        writer.write(data)
        async with asyncio.timeout(timeout):
            await writer.drain()
            while chunk := await reader.read(65536):
                out += chunk
    except (TimeoutError, ConnectionError):
        pass
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    return out
