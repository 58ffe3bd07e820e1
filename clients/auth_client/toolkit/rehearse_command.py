"""`auth-toolkit rehearse ...`: wires auth-service, the rehearsal and the output
together (see `auth_client.toolkit.rehearse` for what a rehearsal does), and says
on stderr which step it is at."""

from __future__ import annotations

import sys

from auth_client import TLSConfig
from auth_client.toolkit import exits
from auth_client.toolkit.reconcile_checker import GrpcUserStates
from auth_client.toolkit.rehearse import Rehearsal, RehearsalOptions


def _say(message: str) -> None:
    print(f"auth-toolkit rehearse: {message}", file=sys.stderr, flush=True)  # noqa: T201


async def run(
    database_url: str,
    options: RehearsalOptions,
    *,
    target: str,
    token: str | None,
    tls: TLSConfig | None = None,
    timeout: float = 10.0,
    output_format: str = "table",
) -> int:
    """Print the report; exits.OK when every table is a go, exits.REFUSED when the
    rehearsal ran and found a no-go. Raises RehearsalError when it cannot run."""
    async with GrpcUserStates(target, token=token, tls=tls, timeout=timeout) as states:
        report = await Rehearsal(database_url, options, states, say=_say).run()
    print(report.render_json() if output_format == "json" else report.render_text())  # noqa: T201
    return exits.OK if report.go else exits.REFUSED
