"""Logging set-up: JSON lines for production, readable text for `auth-service dev`.

With JSON, every line a process writes to stderr is one JSON object, including the
lines that do not come from Python's logging: gRPC core (C++) writes its own
plain-text lines straight to file descriptor 2 (for instance on every failed TLS
handshake, which any peer can cause), and an uncaught traceback or a warning is
printed there too. `configure()` puts a pipe on fd 2 and a thread that turns each
such line into a JSON object (`logger` "grpc.core" for gRPC core's lines, else
"stderr"); Python's own records skip the pipe and are written whole, one write per
line, under the same lock.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import re
import sys
import threading
from datetime import UTC, datetime
from typing import Any

# LogRecord attributes that are not user-supplied `extra=` fields.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}
# gRPC core (absl) lines: "E1126 12:00:00.123456  1234 file.cc:12] message".
_CORE_LINE = re.compile(r"^([EWID])\d{4} [\d:.]+\s+\d+ (\S+:\d+)\] (.*)$")
_CORE_LEVELS = {"E": "error", "W": "warning", "I": "info", "D": "debug"}


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and any `extra=` fields."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        out.update(
            (key, value)
            for key, value in vars(record).items()
            if key not in _STANDARD and not key.startswith("_")
        )
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str, ensure_ascii=False)


def wrap_line(line: str) -> str:
    """A line some other writer put on stderr, as one JSON object (unchanged when it
    already is one)."""
    text = line.rstrip("\n")
    if text.startswith("{"):
        with contextlib.suppress(ValueError):
            if isinstance(json.loads(text), dict):
                return text
    core = _CORE_LINE.match(text)
    if core:
        level, where, message = core.groups()
        out = {"time": _now(), "level": _CORE_LEVELS[level], "logger": "grpc.core"}
        out |= {"message": message, "source": where}
    else:
        out = {"time": _now(), "level": "error", "logger": "stderr", "message": text}
    return json.dumps(out, ensure_ascii=False)


class _LineWriter:
    """Writes whole lines to a file descriptor, one write each, under one lock."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.lock = threading.Lock()

    def write_line(self, line: str) -> None:
        data = (line + "\n").encode("utf-8", "replace")
        with self.lock:
            while data:
                written = os.write(self.fd, data)
                data = data[written:]


class _LineHandler(logging.Handler):
    def __init__(self, writer: _LineWriter) -> None:
        super().__init__()
        self._writer = writer

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._writer.write_line(self.format(record))
        except Exception:
            self.handleError(record)


class _StderrPump:
    """fd 2 -> pipe -> thread -> JSON lines on the original stderr."""

    def __init__(self) -> None:
        self.writer = _LineWriter(os.dup(2))
        read_fd, write_fd = os.pipe()
        os.dup2(write_fd, 2)
        os.close(write_fd)
        self._read = os.fdopen(read_fd, "r", encoding="utf-8", errors="replace")
        self._thread = threading.Thread(target=self._run, name="stderr-json", daemon=True)
        self._thread.start()
        atexit.register(self.close)

    def _run(self) -> None:
        for line in self._read:
            self.writer.write_line(wrap_line(line))

    def close(self) -> None:
        """Give fd 2 back (ending the pipe) and let the thread write what is left."""
        sys.stderr.flush()
        os.dup2(self.writer.fd, 2)
        self._thread.join(timeout=2)


_pump: _StderrPump | None = None


def configure(level: str = "INFO", fmt: str = "json") -> None:
    global _pump  # noqa: PLW0603 - one pump per process
    if fmt == "json":
        if _pump is None:
            _pump = _StderrPump()
        handler: logging.Handler = _LineHandler(_pump.writer)
        handler.setFormatter(JsonFormatter())
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Third-party chatter stays at WARNING unless we debug.
    for noisy in ("asyncio", "aiokafka", "grpc"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))
