"""Pacing for sources: ``produce`` at a declared rate, without drift and without bursts.

A source agent's ``produce`` is called in a loop; a camera at 30 fps or a counter at
10 messages a second waits until its next slot is due. ``Pacer`` keeps the schedule
(slots at ``start + k / rate``), so a late message does not push every later one back,
and a long stall is not caught up with a burst: at most ``catch_up`` seconds of slots
are made up.

The owner of a ``Pacer`` is the agent thread that calls ``produce``.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class Pacer:
    """Waits for the next slot of a ``rate`` per second schedule.

        def start(self):
            self._pace = Pacer(self.params.fps)

        def produce(self):
            if not self._pace.wait(self.wait):   # False: asked to stop while waiting
                return
            self.frames.send(...)
    """

    def __init__(self, rate: float | None, *, catch_up: float = 0.0,
                 clock: Callable[[], float] = time.monotonic):
        if rate is not None and rate <= 0:
            raise ValueError(f"a rate must be positive, got {rate}")
        self.rate = rate
        self.catch_up = catch_up
        self._clock = clock
        self._due = clock()

    @property
    def period(self) -> float:
        return 0.0 if not self.rate else 1.0 / self.rate

    def delay(self) -> float:
        """Seconds until the next slot (0 when it is due)."""
        return max(0.0, self._due - self._clock())

    def wait(self, sleep: Callable[[float], bool]) -> bool:
        """Wait for the next slot with ``sleep`` (which returns True when interrupted, as
        ``Agent.wait`` does), then take it. False when interrupted: the slot is not taken."""
        delay = self.delay()
        if delay > 0 and sleep(delay):
            return False
        self.take()
        return True

    def take(self) -> None:
        """Take the current slot; the next one is one period later.

        A slot taken late by less than a period keeps the schedule (wake-ups are always a
        little late; moving the schedule by each would drift). After a longer stall the
        schedule restarts so that only the slots of the last ``catch_up`` seconds are due.
        """
        if self.rate:
            floor = self._clock() - self.catch_up
            following = self._due + self.period
            self._due = following if following > floor else floor + self.period

    def reset(self) -> None:
        """The next slot is due now (after a pause, say)."""
        self._due = self._clock()
