"""Joining verdicts per part: pure logic, no I/O, driven by the agent with the current time.

One join for every agent that hands a part's result to a far side (the Modbus PLC,
an OPC UA server, an MQTT broker): the same rule of outcome, timeout and duplicates
wherever a line's results leave it.

A part is complete when every connected view has sent its verdict; it is defective if
any view says so. A part still missing a view ``timeout`` seconds after its first
verdict is closed as incomplete: it is never passed silently. Closed parts queue in
the order they closed and leave the queue only once written.

Verdicts are delivered at least once, so the same verdict may arrive twice: for a
part still open or queued the copy is kept (to be acknowledged with the part), for a
part already written it is reported as such and must not be written again.
"""

from __future__ import annotations

import enum
from collections import OrderedDict, deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class Outcome(enum.Enum):
    OK = "ok"
    DEFECTIVE = "defective"
    INCOMPLETE = "incomplete"


class Offer(enum.Enum):
    """What became of an offered verdict."""

    HELD = "held"  # kept until its part is written: don't acknowledge it yet
    WRITTEN = "written"  # its part was already written: acknowledge it, write nothing


@dataclass
class Part(Generic[T]):
    """One part's verdicts so far, and the items (messages) to acknowledge once it is written."""

    part_id: int
    opened: float
    views: dict[str, Mapping[str, Any]] = field(default_factory=dict)
    items: list[T] = field(default_factory=list)
    outcome: Outcome | None = None  # set when the part closes
    missing: tuple[str, ...] = ()
    sequence: int | None = None  # the counter value given at the first write attempt

    @property
    def defective(self) -> bool:
        return any(bool(v.get("defective")) for v in self.views.values())

    @property
    def score(self) -> float:
        """The highest defect score among the views that arrived (0.0 with none)."""
        return max((float(v.get("score", 0.0)) for v in self.views.values()), default=0.0)

    @property
    def label(self) -> str:
        """The first defective view's label (in arrival order), else "ok"."""
        for v in self.views.values():
            if v.get("defective"):
                return str(v.get("label", "defective"))
        return "ok"


class Join(Generic[T]):
    """Collects verdicts from ``views`` into parts and queues closed parts in order."""

    def __init__(self, views: Sequence[str], timeout: float, *, memory: int = 4096):
        if not views:
            raise ValueError("a join needs at least one view")
        self.views = tuple(views)
        self.timeout = timeout
        self.open: OrderedDict[int, Part[T]] = OrderedDict()  # by first verdict's arrival
        self.queue: deque[Part[T]] = deque()  # closed, not yet written, in closing order
        self._queued: dict[int, Part[T]] = {}
        self._written: OrderedDict[int, None] = OrderedDict()  # recently written part ids
        self._memory = memory

    def offer(self, view: str, verdict: Mapping[str, Any], item: T, now: float) -> Offer:
        """Take one view's verdict of a part."""
        if view not in self.views:
            raise ValueError(f"unknown view {view!r} (views: {', '.join(self.views)})")
        part_id = int(verdict["part_id"])
        if part_id in self._written:
            return Offer.WRITTEN
        part = self._queued.get(part_id) or self.open.get(part_id)
        if part is None:
            part = self.open[part_id] = Part(part_id, now)
        part.items.append(item)
        part.views.setdefault(view, verdict)  # a redelivered copy never replaces the first
        if part.outcome is None and len(part.views) == len(self.views):
            self._close(part, Outcome.DEFECTIVE if part.defective else Outcome.OK)
        return Offer.HELD

    def expire(self, now: float) -> list[Part[T]]:
        """Close as incomplete every open part older than the timeout; returns them."""
        expired = [p for p in self.open.values() if now - p.opened >= self.timeout]
        for part in expired:
            part.missing = tuple(v for v in self.views if v not in part.views)
            self._close(part, Outcome.INCOMPLETE)
        return expired

    def written(self, part: Part[T]) -> None:
        """The head of the queue reached the far side: forget it, but remember its id."""
        if not self.queue or self.queue[0] is not part:
            raise ValueError(f"part {part.part_id} is not the next one to write")
        self.queue.popleft()
        del self._queued[part.part_id]
        self.remember(part.part_id)

    def already_written(self, part_id: int) -> list[T]:
        """The far side shows ``part_id`` (learned after verdicts of it arrived: the agent
        waited for it): drop its part wherever it waits, remember it, and return its items,
        to be acknowledged without a write."""
        part = self.open.pop(part_id, None) or self._queued.pop(part_id, None)
        if part is not None and part.outcome is not None:
            self.queue.remove(part)
        self.remember(part_id)
        return [] if part is None else part.items

    def remember(self, part_id: int) -> None:
        """Treat ``part_id`` as written (the far side already shows it, after a restart)."""
        self._written[part_id] = None
        self._written.move_to_end(part_id)
        while len(self._written) > self._memory:
            self._written.popitem(last=False)

    def _close(self, part: Part[T], outcome: Outcome) -> None:
        part.outcome = outcome
        del self.open[part.part_id]
        self.queue.append(part)
        self._queued[part.part_id] = part
