"""Camera buffers (GenICam PFNC pixel formats) to numpy arrays in the layout frames carry.

Mono formats stay single-channel: Mono8 as uint8, unpacked Mono10/Mono12/Mono16 as uint16
with their values unscaled (the format name sent with the frame gives the bit depth).
Colour formats become BGR8, OpenCV's order, which is what the rest of the graph expects;
Bayer mosaics are demosaiced with OpenCV. Where no conversion is needed the result is a
view on the buffer: callers that must hand the buffer back to a producer ask for a copy.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from graphrun_agents.errors import PixelFormatError


@dataclass(frozen=True)
class PixelFormat:
    """How one pixel format is laid out and what it becomes."""

    name: str
    bytes_per_pixel: int
    sent_as: str  # the pixel format of the converted array
    channels: int = 1  # channels in the buffer
    cv_code: int | None = None  # cv2.cvtColor code to BGR, if any
    bits: int = 8  # significant bits per channel


# GenICam names; OpenCV's four-letter Bayer codes name the top-left 2x2 tile, as PFNC does.
FORMATS: dict[str, PixelFormat] = {
    f.name: f
    for f in (
        PixelFormat("Mono8", 1, "Mono8"),
        PixelFormat("Mono10", 2, "Mono10", bits=10),
        PixelFormat("Mono12", 2, "Mono12", bits=12),
        PixelFormat("Mono16", 2, "Mono16", bits=16),
        PixelFormat("RGB8", 3, "BGR8", channels=3, cv_code=cv2.COLOR_RGB2BGR),
        PixelFormat("BGR8", 3, "BGR8", channels=3),
        PixelFormat("RGBa8", 4, "BGR8", channels=4, cv_code=cv2.COLOR_RGBA2BGR),
        PixelFormat("BGRa8", 4, "BGR8", channels=4, cv_code=cv2.COLOR_BGRA2BGR),
        PixelFormat("BayerRG8", 1, "BGR8", cv_code=cv2.COLOR_BayerRGGB2BGR),
        PixelFormat("BayerBG8", 1, "BGR8", cv_code=cv2.COLOR_BayerBGGR2BGR),
        PixelFormat("BayerGR8", 1, "BGR8", cv_code=cv2.COLOR_BayerGRBG2BGR),
        PixelFormat("BayerGB8", 1, "BGR8", cv_code=cv2.COLOR_BayerGBRG2BGR),
    )
}


def lookup(pixel_format: str) -> PixelFormat:
    """The layout of ``pixel_format``; PixelFormatError if it is not supported."""
    try:
        return FORMATS[pixel_format]
    except KeyError:
        raise PixelFormatError(
            f"pixel format {pixel_format!r} is not supported; supported: {', '.join(FORMATS)} "
            "(packed formats such as Mono10p or Mono12Packed are not)"
        ) from None


def to_array(
    data: np.ndarray | bytes | bytearray | memoryview,
    width: int,
    height: int,
    pixel_format: str,
    *,
    line_pitch: int | None = None,
    copy: bool = False,
) -> tuple[np.ndarray, str]:
    """Convert one image buffer; returns the array and the pixel format it is in now.

    ``data`` is the raw buffer (any dtype: it is read as bytes). ``line_pitch`` is the
    number of bytes per line when lines are padded. With ``copy`` the result never shares
    memory with ``data``, so the buffer can be requeued at once.
    """
    fmt = lookup(pixel_format)
    if width <= 0 or height <= 0:
        raise PixelFormatError(f"{pixel_format} image size must be positive, got width={width} height={height}")
    raw = _bytes_view(data)
    row = width * fmt.bytes_per_pixel
    pitch = row if line_pitch is None else line_pitch
    if pitch < row:
        raise PixelFormatError(f"{pixel_format} line_pitch {line_pitch} is less than width {width} x {fmt.bytes_per_pixel} bytes")
    needed = pitch * (height - 1) + row
    if raw.size < needed:
        raise PixelFormatError(
            f"{pixel_format} buffer of {raw.size} bytes is too small for {width}x{height} "
            f"(needs {needed} bytes)"
        )
    rows = np.lib.stride_tricks.as_strided(raw, shape=(height, row), strides=(pitch, 1)) if pitch != row else raw[:needed].reshape(height, row)
    if fmt.bytes_per_pixel == 2:
        image = rows.view("<u2") if rows.flags.c_contiguous else np.ascontiguousarray(rows).view("<u2")
    elif fmt.channels > 1:
        image = rows.reshape(height, width, fmt.channels)
    else:
        image = rows
    if fmt.cv_code is not None:
        return cv2.cvtColor(np.ascontiguousarray(image), fmt.cv_code), fmt.sent_as
    if copy or not image.flags.c_contiguous:
        image = np.array(image, copy=True, order="C")
    return image, fmt.sent_as


def _bytes_view(data: np.ndarray | bytes | bytearray | memoryview) -> np.ndarray:
    if isinstance(data, np.ndarray):
        flat = data.reshape(-1) if data.flags.c_contiguous else np.ascontiguousarray(data).reshape(-1)
        return flat.view(np.uint8)
    return np.frombuffer(data, dtype=np.uint8)


def convert(image: np.ndarray, pixel_format: str, wanted: str | None) -> tuple[np.ndarray, str]:
    """``image`` (Mono8/Mono16/BGR8…) in the format a graph asked for (Mono8 or BGR8), if it asked."""
    if wanted is None or wanted == pixel_format:
        return image, pixel_format
    if wanted not in ("Mono8", "BGR8"):
        raise PixelFormatError(f"frames can be converted to Mono8 or BGR8, not {wanted!r}")
    if image.dtype == np.uint16:
        bits = FORMATS[pixel_format].bits if pixel_format in FORMATS else 16
        image = cv2.convertScaleAbs(image, alpha=255.0 / ((1 << bits) - 1))
    if wanted == "Mono8":
        return (cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image), "Mono8"
    return (image if image.ndim == 3 else cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)), "BGR8"


def format_of(image: np.ndarray) -> str:
    """The pixel format of an array read from a file or an OpenCV capture."""
    if image.ndim == 2:
        return "Mono16" if image.dtype == np.uint16 else "Mono8"
    if image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8:
        return "BGR8"
    raise PixelFormatError(f"images of shape {image.shape} and dtype {image.dtype} have no supported pixel format")
