"""The exit codes of `auth-toolkit` (each command's --help and the playbook list
them; a scheduler can tell "stopped, continue later" from "refused" from "failed")."""

from __future__ import annotations

OK = 0  # done: the run completed (reconcile) or nothing needs attention
ERROR = 1  # failed: the message says why (database, auth-service, bad input)
USAGE = 2  # the command line is wrong
REFUSED = 3  # refused before changing anything (guard, cascades), unsafe to roll back, no-go
STOPPED = 4  # stopped at --max-batches; --state-file continues where it stopped
INTERRUPTED = 130  # stopped by SIGINT / Ctrl-C (128 + 2); --state-file continues

RECONCILE_HELP = (
    f"exit codes: {OK} done, {ERROR} failed, {USAGE} usage error, {REFUSED} refused before"
    f" changing anything (--max-orphan-fraction, cascades), {STOPPED} stopped at"
    f" --max-batches, {INTERRUPTED} interrupted (both: rerun with the same --state-file to"
    " continue)"
)
FK_AUDIT_HELP = (
    f"exit codes: {OK} done, {ERROR} failed, {USAGE} usage error, {REFUSED} --check-restore"
    " found rows that would fail validation (a rollback would leave constraints NOT VALID)"
)
REHEARSE_HELP = (
    f"exit codes: {OK} every table is a go, {ERROR} failed (the rehearsal could not run:"
    f" database, copy, tools, auth-service), {USAGE} usage error, {REFUSED} the rehearsal ran"
    f" and found a no-go (the report says which table and why), {INTERRUPTED} interrupted (the"
    " scratch database is dropped all the same)"
)
