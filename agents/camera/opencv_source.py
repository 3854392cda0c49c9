"""The ``opencv`` source: a video file, a V4L device index, or an RTSP/HTTP stream."""

from __future__ import annotations

import os
import time

import cv2

from graphrun_agents.errors import CameraConfigError, DeviceLostError

from .pixel_formats import format_of
from .source import Grabbed, Source


def parse_target(path: str | int) -> str | int:
    """A device index (int, or a string of digits) or a file path / URL, as VideoCapture takes it."""
    if isinstance(path, int):
        return path
    return int(path) if path.strip().isdigit() else path


def is_network(target: str | int) -> bool:
    return isinstance(target, str) and "://" in target and not target.startswith("file://")


class OpenCVSource(Source):
    """A ``cv2.VideoCapture``. A file ends (or loops); a device or a stream that drops is lost.

    Losing a device or stream raises DeviceLostError, and the agent reopens it with backoff.
    """

    def __init__(self, path: str | int, *, loop: bool = False, timeout: float = 5.0):
        super().__init__()
        self.target = parse_target(path)
        self.loop = loop
        self.timeout = timeout
        self._capture: cv2.VideoCapture | None = None
        self._is_file = isinstance(self.target, str) and not is_network(self.target)

    def open(self) -> None:
        self.close()
        if self._is_file and not os.path.exists(str(self.target)):
            raise CameraConfigError(f"opencv path {self.target!r} does not exist")
        params: list[int] = []
        if is_network(self.target):
            ms = int(self.timeout * 1000)
            params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms]
        capture = cv2.VideoCapture(self.target, cv2.CAP_ANY, params)
        if not capture.isOpened():
            capture.release()
            if self._is_file:
                raise CameraConfigError(f"opencv path {self.target!r} is not a video OpenCV can read")
            raise DeviceLostError(f"opencv source {self.target!r} could not be opened")
        if not self._is_file:
            capture.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # live sources: the newest frame, not a backlog
        self._capture = capture
        self.exhausted = False
        self.info = {
            "path": str(self.target),
            "backend": capture.getBackendName(),
            "size": f"{int(capture.get(cv2.CAP_PROP_FRAME_WIDTH))}x{int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))}",
        }

    def grab(self, part_id: int) -> Grabbed | None:
        if self._capture is None:
            raise DeviceLostError(f"opencv source {self.target!r} is not open")
        ok, image = self._capture.read()
        if not ok and self._is_file and self.loop:
            self._capture.set(cv2.CAP_PROP_POS_FRAMES, 0)
            ok, image = self._capture.read()
        if not ok or image is None:
            if self._is_file:
                self.exhausted = True
                return None
            raise DeviceLostError(f"opencv source {self.target!r} stopped delivering frames")
        return Grabbed(image, format_of(image), time.time())

    def close(self) -> None:
        if self._capture is not None:
            self._capture.release()
            self._capture = None
