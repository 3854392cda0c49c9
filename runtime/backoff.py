"""Exponential backoff for one run of consecutive failures.

Every retry loop in graphrun (the runner's Redis reconnects and message retries, the
launcher's restarts, a camera's or a PLC's reconnects) uses this one helper, so that
"how long to wait" has one rule: the delay doubles with each failure of a run, is
capped, and starts again from the bottom after a success.

The owner of a ``Backoff`` is the one thread that calls it; it holds no lock.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class Backoff:
    """Delays of ``initial * factor**n`` seconds, capped at ``maximum``, for the n-th
    consecutive failure; ``reset()`` after a success.

        backoff = Backoff(initial=0.1, maximum=5.0)
        while not connected():
            stopping.wait(backoff.next())
        backoff.reset()
    """

    def __init__(self, *, initial: float = 0.05, maximum: float = 5.0, factor: float = 2.0,
                 clock: Callable[[], float] = time.monotonic):
        if initial <= 0 or maximum < initial or factor < 1:
            raise ValueError(f"bad backoff: initial={initial}, maximum={maximum}, factor={factor}")
        self.initial = initial
        self.maximum = maximum
        self.factor = factor
        self._clock = clock
        self.failures = 0  # consecutive failures since the last reset
        self.until = 0.0  # clock time before which the next attempt should not start

    def peek(self) -> float:
        """The delay ``next()`` would return, without counting a failure."""
        return min(self.maximum, self.initial * self.factor ** min(self.failures, 64))

    def next(self) -> float:
        """Count one more failure and return how long to wait before the next attempt."""
        delay = self.peek()
        self.failures += 1
        self.until = self._clock() + delay
        return delay

    def reset(self) -> None:
        """A success: the next failure waits ``initial`` again."""
        self.failures = 0
        self.until = 0.0

    def ready(self) -> bool:
        """True when the delay of the last failure has passed (or there was none)."""
        return self._clock() >= self.until

    def remaining(self) -> float:
        """Seconds left of the last failure's delay (0 when ready)."""
        return max(0.0, self.until - self._clock())

    def __repr__(self) -> str:
        return f"Backoff(initial={self.initial}, maximum={self.maximum}, failures={self.failures})"
