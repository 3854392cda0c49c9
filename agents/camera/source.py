"""What every image source gives the camera agent: open, grab, trigger, close.

A source knows one kind of device or file; the agent does the rest (pacing, part ids,
metadata, reconnection). ``grab`` returns None when no frame came in time and raises
``DeviceLostError`` when the device or stream is gone, so the agent can reconnect.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import numpy as np

from graphrun_agents.messages import Truth


@dataclass(slots=True)
class Grabbed:
    """One acquired image and what the source knows about it."""

    image: np.ndarray
    pixel_format: str
    timestamp: float  # seconds since the epoch, when the image was acquired
    frame_id: int | None = None  # the device's own frame counter, if it keeps one
    exposure_us: float | None = None
    gain: float | None = None
    truth: Truth | None = None


@dataclass
class SourceStats:
    """Counters a source keeps across reconnections."""

    incomplete: int = 0  # frames the device delivered broken (discarded)
    dropped: int = 0  # frames the device produced that never reached us (frame-id gaps)
    unreadable: int = 0  # files that could not be decoded

    def as_dict(self) -> dict[str, int]:
        return {"incomplete": self.incomplete, "dropped": self.dropped, "unreadable": self.unreadable}


class Source(ABC):
    """An image source. Use as a context manager, or call open() and close()."""

    #: False when the device sets the rate itself (a free-running GenICam camera).
    paced: bool = True

    def __init__(self) -> None:
        self.stats = SourceStats()
        self.exhausted = False  # a file or folder played once has no more frames
        self.info: dict[str, Any] = {}  # what the health record shows about the device

    @abstractmethod
    def open(self) -> None:
        """Open the device or file; raise a CameraError saying what is wrong if it can't."""

    @abstractmethod
    def grab(self, part_id: int) -> Grabbed | None:
        """The next image (``part_id`` lets synthetic parts match across cameras)."""

    def trigger(self) -> None:
        """Fire a software trigger. Sources without one take their image on ``grab``."""

    @abstractmethod
    def close(self) -> None:
        """Release the device; safe to call twice and after a failed open."""

    def __enter__(self) -> Source:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
