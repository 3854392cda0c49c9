"""What the HMI makes of verdicts for the operator: a verdict as the page shows it, the
rejects to acknowledge, and the reject rate over the last parts with its alarm.

None of it locks: ``LiveState`` calls it under its own lock.
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: Largest defect map passed on to the page (cells a side); a bigger one is left out.
MAX_MAP_CELLS = 128


def verdict_view(payload: Mapping[str, Any]) -> dict[str, Any]:
    """A verdict's fields as the page shows them; with where the defect is when the model says.

    JSON-ready but for ``defect_map``, kept as the received array (no copy on the line's
    path): ``json_ready`` makes it a list when a page asks.
    """
    verdict = {
        "part_id": payload.get("part_id"),
        "label": str(payload.get("label", "")),
        "score": finite(payload.get("score")),
        "threshold": finite(payload.get("threshold")),
        "defective": bool(payload.get("defective")),
        "model": payload.get("model"),
        "model_version": payload.get("model_version"),
        "defect_map": None,
        "defect_map_region": None,
    }
    cells, region = payload.get("defect_map"), payload.get("defect_map_region")
    if (isinstance(cells, np.ndarray) and cells.dtype == np.uint8 and cells.ndim == 2 and 0 < cells.size
            and max(cells.shape) <= MAX_MAP_CELLS and isinstance(region, (list, tuple)) and len(region) == 4):
        verdict["defect_map"] = cells
        verdict["defect_map_region"] = [int(v) for v in region]
    return verdict


def json_ready(verdict: dict[str, Any]) -> dict[str, Any]:
    """A copy of a ``verdict_view`` that JSON can carry."""
    cells = verdict["defect_map"]
    return verdict if cells is None else dict(verdict, defect_map=cells.tolist())


def finite(value: Any) -> float | None:
    """A score as JSON can carry it: a model's NaN or infinity, or a missing score, is None."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


@dataclass(slots=True)
class Reject:
    """A rejected part as the operator acknowledges it."""

    part_id: int
    time: float  # when its first rejecting verdict arrived
    label: str
    cameras: list[str]
    source: Any  # the verdict message that rejected it: an acknowledgement is traced from it
    acknowledged: dict[str, Any] | None = None  # {"time", "reason"} once acknowledged

    def view(self) -> dict[str, Any]:
        return {"part_id": self.part_id, "time": self.time, "label": self.label, "cameras": list(self.cameras),
                "acknowledged": self.acknowledged}


class RejectLog:
    """The last ``keep`` rejected parts, newest last; older ones can no longer be acknowledged here."""

    def __init__(self, keep: int):
        self.keep = keep
        self._rejects: OrderedDict[int, Reject] = OrderedDict()

    def add(self, part_id: int, camera: str, label: str, now: float, source: Any) -> None:
        reject = self._rejects.get(part_id)
        if reject is not None:
            if camera not in reject.cameras:
                reject.cameras.append(camera)
            return
        self._rejects[part_id] = Reject(part_id, now, label, [camera], source)
        while len(self._rejects) > self.keep:
            self._rejects.popitem(last=False)

    def get(self, part_id: int) -> Reject | None:
        return self._rejects.get(part_id)

    def views(self) -> list[dict[str, Any]]:
        """Newest first."""
        return [r.view() for r in reversed(self._rejects.values())]

    @property
    def unacknowledged(self) -> int:
        return sum(r.acknowledged is None for r in self._rejects.values())


@dataclass(slots=True)
class RejectWindow:
    """The reject rate over the last ``size`` parts, and an alarm when it reaches ``alarm``.

    The alarm is judged over a full window only: three rejects among the first five
    parts of a shift are no rate yet. A part counts as a reject from the verdict that
    rejects it on, whichever view's that is.
    """

    size: int
    alarm: float | None = None
    alarming: bool = False
    rejects: int = 0
    _parts: deque[int] = field(default_factory=deque)
    _rejected: dict[int, bool] = field(default_factory=dict)

    def add_part(self, part_id: int) -> None:
        if len(self._parts) >= self.size:
            oldest = self._parts.popleft()
            self.rejects -= self._rejected.pop(oldest, False)
        self._parts.append(part_id)
        self._rejected[part_id] = False

    def mark_reject(self, part_id: int) -> None:
        if self._rejected.get(part_id) is False:
            self._rejected[part_id] = True
            self.rejects += 1

    @property
    def rate(self) -> float | None:
        return self.rejects / len(self._parts) if self._parts else None

    def update_alarm(self) -> bool | None:
        """The alarm's new state if it just changed (True raised, False cleared), else None."""
        full = len(self._parts) >= self.size
        now = self.alarm is not None and full and self.rejects / self.size >= self.alarm
        if now == self.alarming:
            return None
        self.alarming = now
        return now

    def view(self) -> dict[str, Any]:
        return {"size": self.size, "parts": len(self._parts), "rejects": self.rejects, "rate": self.rate,
                "alarm": self.alarm, "alarming": self.alarming}
