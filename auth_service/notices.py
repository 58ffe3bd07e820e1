"""Log lines for conditions that repeat (a database that stays down, a broker that
keeps refusing): said at once the first time, then at most once per interval with
how often it happened meanwhile, so a long outage neither floods the log nor goes
quiet."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable


class RepeatingNotice:
    """`notice(message)` logs at `level` the first time and then at most every
    `interval` seconds; `clear()` ends the episode (the next notice is logged at once)
    and says how many repeats there were when asked to (`recovered=...`)."""

    def __init__(
        self,
        log: logging.Logger,
        *,
        level: int = logging.WARNING,
        interval: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._log = log
        self._level = level
        self._interval = interval
        self._clock = clock
        self._last: float | None = None
        self._suppressed = 0
        self.count = 0  # notices in the current episode

    @property
    def active(self) -> bool:
        return self.count > 0

    def notice(self, message: str, *args: object, **extra: object) -> bool:
        """Log `message % args` unless one was logged less than `interval` ago.
        True when it was logged."""
        self.count += 1
        now = self._clock()
        if self._last is not None and now - self._last < self._interval:
            self._suppressed += 1
            return False
        if self._suppressed:
            message += " (%d more since the last notice)"
            args = (*args, self._suppressed)
        self._last = now
        self._suppressed = 0
        self._log.log(self._level, message, *args, extra=extra or None)
        return True

    def clear(self, recovered: str | None = None, *args: object) -> None:
        """The condition is over; log `recovered` (INFO) if there was an episode."""
        if self.count and recovered:
            self._log.info(recovered, *args)
        self.count = 0
        self._last = None
        self._suppressed = 0
