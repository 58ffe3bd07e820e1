"""What the server knows about its database right now, beyond "the last ping
worked": whether the schema is the one this release needs, and whether queries
are getting answers. The API consults it before admitting a call, so callers get
an honest UNAVAILABLE at once instead of waiting (and instead of being blamed for
calls that pile up behind a database that stopped answering).

Stalled: queries are waiting and none has been answered for `stall_s`
(DB_STALL_TIMEOUT_MS). A database that answers at all completes something every
few milliseconds under load, so half a second of silence with work pending means
it is frozen, locked, overloaded or cut off. 0 turns the check off.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from auth_service.errors import UnavailableError

STALL_S = 0.5
# When a concurrency limit is hit, the database is to blame (not the caller) if it
# has left queries unanswered for this share of the stall timeout.
SUSPECT_SHARE = 0.1


class DatabaseStatus:
    """Counters updated around every query (`begin` / `end`), a schema verdict set by
    the health monitor. One event loop; plain attributes, no locks."""

    __slots__ = (
        "_busy_since",
        "_clock",
        "_last_answer",
        "schema_problem",
        "stall_s",
        "suspect_s",
        "waiting",
    )

    def __init__(
        self, *, stall_s: float = STALL_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.stall_s = stall_s
        self.suspect_s = stall_s * SUSPECT_SHARE
        self._clock = clock
        self.waiting = 0
        self._busy_since = 0.0
        self._last_answer = 0.0
        # Set while the schema is not what this release needs (one line naming the fix).
        self.schema_problem: str | None = None

    def begin(self) -> None:
        if self.waiting == 0:
            self._busy_since = self._clock()
        self.waiting += 1

    def end(self, *, answered: bool) -> None:
        self.waiting -= 1
        if answered:
            self._last_answer = self._clock()

    def silent_for(self) -> float:
        """Seconds without an answer while queries wait (0 when none waits)."""
        if self.waiting <= 0:
            return 0.0
        return self._clock() - max(self._busy_since, self._last_answer)

    def stalled(self) -> bool:
        return self.stall_s > 0 and self.silent_for() >= self.stall_s

    def suspect(self) -> bool:
        return self.stall_s > 0 and self.silent_for() >= self.suspect_s

    def refusal(self) -> str | None:
        """Why API calls are answered UNAVAILABLE without trying, or None."""
        if self.schema_problem is not None:
            return self.schema_problem
        if self.waiting and self.stalled():
            return (
                f"the database has not answered for {self.silent_for():.1f}s"
                f" ({self.waiting} queries waiting)"
            )
        return None

    def require(self) -> None:
        """Raise UnavailableError (naming the reason) when the database cannot answer
        a query now: called only where a query is needed, so what memory answers is
        never refused for it."""
        refusal = self.refusal()
        if refusal is not None:
            raise UnavailableError(refusal)
