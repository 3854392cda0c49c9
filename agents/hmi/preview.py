"""Preview JPEGs: a frame scaled down for the browser, encoded once per new frame.

Encoding runs in the web server's threads, when a browser asks, never in the
agent's handle: a preview must not slow the line.
"""

from __future__ import annotations

import re
import threading

import cv2
import numpy as np

from ..errors import PreviewError
from .state import Shot

_BITS = re.compile(r"(\d+)$")


def bit_depth(pixel_format: str, dtype: np.dtype) -> int:
    """Significant bits of a pixel: Mono12 frames travel as uint16 with values up to 4095."""
    if dtype == np.uint8:
        return 8
    match = _BITS.search(pixel_format or "")
    bits = int(match.group(1)) if match else 16
    return bits if 8 < bits <= 16 else 16


def preview_image(image: np.ndarray, pixel_format: str, width: int) -> np.ndarray:
    """An 8-bit mono or BGR image at most ``width`` wide, aspect kept; never changes ``image``."""
    if image.dtype not in (np.uint8, np.uint16) or image.ndim not in (2, 3) or (
        image.ndim == 3 and image.shape[2] not in (1, 3, 4)
    ):
        raise PreviewError(
            f"cannot preview a {image.dtype} image of shape {image.shape} ({pixel_format or 'no pixel format'}): "
            "expected uint8 or uint16, HxW or HxWx1/3/4"
        )
    image = shrink(image, width)  # first: every later step then works on the small image
    if image.dtype == np.uint16:
        image = cv2.convertScaleAbs(image, alpha=255.0 / (2 ** bit_depth(pixel_format, image.dtype) - 1))
    if image.ndim == 3 and image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    return image


def shrink(image: np.ndarray, width: int) -> np.ndarray:
    """``image`` scaled down to ``width``, if wider.

    Halving by 2x2 averages (OpenCV's fast INTER_AREA path) then one bilinear step of
    less than 2x looks like a plain INTER_AREA resize and is ten times faster on 5 MP.
    """
    height, w = image.shape[:2]
    while w >= 2 * width:
        image = cv2.resize(image[: height - height % 2, : w - w % 2], (w // 2, height // 2),
                           interpolation=cv2.INTER_AREA)
        height, w = image.shape[:2]
    if w > width:
        image = cv2.resize(image, (width, max(1, round(height * width / w))), interpolation=cv2.INTER_LINEAR)
    return image


def encode_jpeg(image: np.ndarray, quality: int) -> bytes:
    ok, buffer = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise PreviewError(f"OpenCV could not encode a {image.dtype} image of shape {image.shape} as JPEG")
    return buffer.tobytes()


class PreviewCache:
    """The JPEG of each camera's latest frame, made on the first request for that frame."""

    def __init__(self, width: int, quality: int):
        self.width = width
        self.quality = quality
        self.encoded = 0  # how many JPEGs were made: one per frame asked for, however many ask
        self._jpegs: dict[str, tuple[int, bytes]] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def jpeg(self, frame: Shot) -> bytes:
        with self._guard:
            lock = self._locks.setdefault(frame.camera, threading.Lock())
        with lock:  # a second browser waits for the first one's JPEG rather than making its own
            cached = self._jpegs.get(frame.camera)
            if cached is not None and cached[0] == frame.seq:
                return cached[1]
            data = encode_jpeg(preview_image(frame.image, frame.pixel_format, self.width), self.quality)
            self._jpegs[frame.camera] = (frame.seq, data)
            with self._guard:
                self.encoded += 1
            return data
