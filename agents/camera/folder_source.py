"""The ``folder`` source: replay the images of a folder, sorted, once or looped."""

from __future__ import annotations

import glob
import os
import time

import cv2
import numpy as np

from graphrun_agents.errors import CameraConfigError

from .pixel_formats import format_of
from .source import Grabbed, Source

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".pgm", ".ppm")


def list_images(pattern: str) -> list[str]:
    """The files ``pattern`` names, sorted: a glob, or a folder (its images)."""
    if os.path.isdir(pattern):
        files = [os.path.join(pattern, f) for f in os.listdir(pattern) if f.lower().endswith(IMAGE_SUFFIXES)]
    else:
        files = [f for f in glob.glob(os.path.expanduser(pattern), recursive=True) if os.path.isfile(f)]
    return sorted(files)


class FolderSource(Source):
    """Reads one file per grab; the folder is listed once, at open."""

    def __init__(self, pattern: str, *, loop: bool = False):
        super().__init__()
        self.pattern = pattern
        self.loop = loop
        self._files: list[str] = []
        self._next = 0

    def open(self) -> None:
        self._files = list_images(self.pattern)
        if not self._files:
            raise CameraConfigError(f"folder path {self.pattern!r} matches no image files")
        self._next = 0
        self.exhausted = False
        self.info = {"path": self.pattern, "images": len(self._files), "loop": self.loop}

    def grab(self, part_id: int) -> Grabbed | None:
        for _ in range(len(self._files)):  # skip unreadable files, but not forever
            if self._next >= len(self._files):
                if not self.loop:
                    self.exhausted = True
                    return None
                self._next = 0
            path = self._files[self._next]
            self._next += 1
            image = _read(path)
            if image is None:
                self.stats.unreadable += 1
                continue
            self.info["file"] = os.path.basename(path)
            return Grabbed(image, format_of(image), time.time())
        raise CameraConfigError(f"folder path {self.pattern!r}: none of its {len(self._files)} files could be read as an image")

    def close(self) -> None:
        self._files = []


def _read(path: str) -> np.ndarray | None:
    """Mono8, Mono16 or BGR8 pixels of an image file; None if it can't be decoded."""
    image = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if image is None:
        return None
    if image.ndim == 3 and image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    if image.ndim == 3 and image.dtype == np.uint16:
        image = cv2.convertScaleAbs(image, alpha=1 / 257)
    if image.dtype not in (np.uint8, np.uint16):
        return None
    return image
