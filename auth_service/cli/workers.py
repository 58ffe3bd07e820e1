"""`auth-service serve --workers N`: N server processes sharing one port.

One Python process saturates one core long before PostgreSQL does, so on a machine
with several cores the supervisor starts N copies of `auth-service serve` bound to
the same address with SO_REUSEPORT; the kernel spreads new connections across
them. Only worker 0 runs the outbox relay (any number of relays is safe, but one
per host is enough). The supervisor forwards SIGTERM/SIGINT to every worker, waits
for them to drain, and exits with the worst exit code. If a worker dies on its own,
the supervisor stops the others and exits non-zero so the orchestrator restarts
the whole unit: no half-capacity process keeps running unnoticed.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import time
from collections.abc import Sequence

from auth_service.addresses import parse_host_port

log = logging.getLogger(__name__)


class WorkersError(ValueError):
    """The worker set-up is invalid (e.g. port 0 cannot be shared)."""


def check_listen(listen: str) -> None:
    _, port = parse_host_port(listen)
    if port == 0:
        raise WorkersError("--workers needs a fixed port: port 0 gives each worker its own")


def run_workers(count: int, listen: str, extra_args: Sequence[str] = ()) -> int:
    check_listen(listen)
    procs: list[subprocess.Popen[bytes]] = []
    stopping = False

    def forward(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        base = [sys.executable, "-m", "auth_service", "serve", "--listen", listen]
        procs.extend(
            subprocess.Popen([*base, "--worker-index", str(index), *extra_args])
            for index in range(count)
        )
        while any(p.poll() is None for p in procs):
            if not stopping and any(p.poll() is not None for p in procs):
                # A worker died by itself: take the unit down, let it be restarted.
                log.error("a worker exited; stopping the others")
                forward(signal.SIGTERM, None)
            time.sleep(0.1)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    codes = [p.returncode for p in procs]
    return 0 if stopping and all(c == 0 for c in codes) else max(1, *(abs(c) for c in codes))
