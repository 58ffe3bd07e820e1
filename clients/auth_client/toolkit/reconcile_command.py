"""`auth-toolkit reconcile ...`: wires the database, auth-service, the state file and
the output together (see `auth_client.toolkit.reconcile` for what a run does)."""

from __future__ import annotations

import json
from pathlib import Path

import asyncpg

from auth_client import TLSConfig
from auth_client.toolkit.reconcile import Options, reconcile
from auth_client.toolkit.reconcile_checker import GrpcUserStates, Pacer
from auth_client.toolkit.reconcile_model import Progress, ReconcileError, StateFile

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
    """Print the report; 0 when the run finished or stopped at --max-batches.
    Raises ReconcileError."""
    if rate < 0:
        raise ReconcileError("--rate must not be negative")
    state = StateFile(Path(state_file)) if state_file else None
    conn = await _connect(database_url)
    try:
        async with GrpcUserStates(target, token=token, tls=tls, timeout=timeout) as checker:
            report = await reconcile(
                conn, checker, options, pacer=Pacer(rate), progress=Progress(), state=state
            )
    finally:
        await conn.close()
    if output_format == "json":
        print(json.dumps(report.to_json(), indent=2))  # noqa: T201
    else:
        print(report.render_text())  # noqa: T201
    return 0
