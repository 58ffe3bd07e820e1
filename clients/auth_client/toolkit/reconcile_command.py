"""`auth-toolkit reconcile ...`: wires the database, auth-service, the state file and
the output together (see `auth_client.toolkit.reconcile` for what a run does)."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import asyncpg

from auth_client import TLSConfig
from auth_client.toolkit import exits
from auth_client.toolkit.reconcile import Options, Reconciliation
from auth_client.toolkit.reconcile_checker import GrpcUserStates, Pacer
from auth_client.toolkit.reconcile_model import Progress, ReconcileError, Report, StateFile

# A fix waits at most this long for a row lock held by the application, then the
# run stops (and can be resumed) instead of queueing behind it indefinitely.
LOCK_TIMEOUT = "10s"


async def _connect(database_url: str) -> asyncpg.Connection:
    try:
        return await asyncpg.connect(
            database_url,
            timeout=10,
            server_settings={
                "application_name": "auth-toolkit reconcile",
                "lock_timeout": LOCK_TIMEOUT,
            },
        )
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise ReconcileError(
            f"cannot connect to the database: {type(exc).__name__}: {exc}"
        ) from exc


async def run(
    database_url: str,
    options: Options,
    *,
    target: str,
    token: str | None,
    rate: float,
    tls: TLSConfig | None = None,
    state_file: str | None = None,
    output_format: str = "table",
    timeout: float = 10.0,
) -> int:
    """Print the report; the exit code says how the run ended (`exits`).
    Raises ReconcileError."""
    if rate < 0:
        raise ReconcileError("--rate must not be negative")
    state = StateFile(Path(state_file)) if state_file else None
    progress = Progress()
    conn = await _connect(database_url)
    try:
        async with GrpcUserStates(target, token=token, tls=tls, timeout=timeout) as checker:
            run = Reconciliation(
                conn, checker, options, pacer=Pacer(rate), progress=progress, state=state
            )
            try:
                report = await run.run()
            except asyncio.CancelledError:  # SIGINT: say where it stopped, then exit 130
                report = run.report
                report.stopped = "interrupted"
                report.complete = False
                progress.update(report, final=True)
                _print(report, output_format)
                return exits.INTERRUPTED
    finally:
        await conn.close()
    _print(report, output_format)
    if report.refused:
        print(f"auth-toolkit reconcile: refused: {report.refused}", file=sys.stderr)  # noqa: T201
        return exits.REFUSED
    return exits.OK if report.complete else exits.STOPPED


def _print(report: Report, output_format: str) -> None:
    if output_format == "json":
        print(json.dumps(report.to_json(), indent=2))  # noqa: T201
    else:
        print(report.render_text())  # noqa: T201
