"""Images as lossless files: PNG, through OpenCV.

PNG over the raw array: every image viewer, labelling tool and training pipeline reads
it, it keeps 8- and 16-bit mono and BGR pixels exactly, and it is a few times smaller
than the raw array on a plain background. What PNG does not carry (the camera's pixel
format, Mono12 in a 16-bit image, exposure, gain) goes into the part's record. The
encoding costs milliseconds per image and is paid for rejected parts only.
"""

from __future__ import annotations

import io

import cv2
import numpy as np

#: dtypes and channel counts PNG holds exactly.
PNG_DTYPES = (np.uint8, np.uint16)
PNG_CHANNELS = (1, 3, 4)


def fits_png(image: np.ndarray) -> bool:
    channels = 1 if image.ndim == 2 else image.shape[2] if image.ndim == 3 else 0
    return image.dtype in PNG_DTYPES and channels in PNG_CHANNELS and image.size > 0


def encode(image: np.ndarray, compression: int) -> tuple[str, bytes]:
    """(file extension, bytes) of ``image``: PNG where it fits, else NumPy's .npy (also lossless)."""
    if fits_png(image):
        try:
            ok, data = cv2.imencode(".png", np.ascontiguousarray(image), [cv2.IMWRITE_PNG_COMPRESSION, compression])
        except cv2.error:
            ok = False
        if ok:
            return "png", data.tobytes()
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(image), allow_pickle=False)
    return "npy", buffer.getvalue()


def load(path: str) -> np.ndarray:
    """An archived image as it was received (PNG read unchanged: 16 bits stay 16 bits)."""
    if path.endswith(".npy"):
        return np.load(path, allow_pickle=False)
    image = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if image is None:
        raise OSError(f"cannot read image {path}")
    return image
