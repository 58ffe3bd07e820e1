"""Step 2 of a call: count it in, or refuse it at once with RESOURCE_EXHAUSTED when a
concurrency or rate limit is hit.

When the calls holding the slots are waiting on a database that stopped answering,
a concurrency limit's refusal is UNAVAILABLE instead: that is not the caller's
doing, and clients retry it elsewhere. A rate limit's refusal never is: the caller
is over its own rate (and a retry elsewhere would get past the limit). Whether the database can answer a call at all is not decided
here but where a query is needed (`store.pool.connection`), so a call that memory
answers is never refused because the database is slow or down.
"""

from __future__ import annotations

from auth_service import errors
from auth_service.api.limits import Limits
from auth_service.store.status import DatabaseStatus


class Admission:
    """The limits of one server. Every `enter(name)` that returns is matched by one
    `leave(name)`."""

    __slots__ = ("database", "limits")

    def __init__(self, limits: Limits, database: DatabaseStatus) -> None:
        self.limits = limits
        self.database = database

    def enter(self, caller: str) -> None:
        try:
            self.limits.admit(caller)
        except errors.RateLimitedError:
            raise  # the caller's own rate, whatever the database is doing
        except errors.ResourceExhaustedError:
            if self.database.suspect():
                raise errors.UnavailableError(
                    "the database is slow to answer; calls are waiting on it"
                ) from None
            raise

    def leave(self, caller: str) -> None:
        self.limits.release(caller)


__all__ = ["Admission"]
