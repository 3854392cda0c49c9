"""Payloads of requests from outside the graph, and answers as JSON.

Shared by ``graphrun request`` and the HTTP gateway: an image file's bytes become a
frame-like payload (the array and what describes it), and an answer's payload becomes
JSON, its arrays written out when small and described when large. Images are read with
OpenCV, which the runtime does not depend on: without it, a clear error says what to
install.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from .errors import ConfigError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
JSON_ARRAY_LIMIT = 65_536  # elements of an array written out in JSON; larger ones are described


def decode_image(data: bytes, source: str = "the image") -> np.ndarray:
    """A PNG, JPEG or TIFF as OpenCV reads it: HxW (grey) or HxWx3 (BGR), 8 or 16 bits."""
    try:
        import cv2
    except ImportError as exc:
        raise ConfigError(f"reading {source} needs OpenCV: pip install 'graphrun[inference]' ({exc})") from exc
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR)
    if image is None:
        raise ConfigError(f"{source} is not an image OpenCV can read (PNG, JPEG or TIFF expected)")
    return image


def image_payload(data: bytes, source: str = "the image", **fields: Any) -> dict[str, Any]:
    """A frame-like payload of an encoded image: the array, its size and pixel format, the
    time, and ``camera``/``part_id``/``frame`` (defaults "request", 0, 0); ``fields``
    add to or override them."""
    image = decode_image(data, source)
    depth = 16 if image.dtype == np.uint16 else 8
    payload: dict[str, Any] = {
        "image": image, "width": int(image.shape[1]), "height": int(image.shape[0]),
        "pixel_format": f"{'Mono' if image.ndim == 2 else 'BGR'}{depth}", "timestamp": time.time(),
        "camera": "request", "part_id": 0, "frame": 0,
    }
    payload.update(fields)
    return payload


def object_payload(data: bytes | str, source: str) -> dict[str, Any]:
    """A payload sent as JSON text: it must be an object (a message's payload is a mapping);
    ``source`` names where it came from in the error (a file, "the body")."""
    try:
        payload = json.loads(data)
    except ValueError as exc:
        raise ConfigError(f"{source} is not JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise ConfigError(f"{source}: a payload is a JSON object, not {type(payload).__name__}")
    return payload


def field_value(text: str) -> Any:
    """A payload field given as text (a query parameter, ``--field KEY=VALUE``): its JSON
    value where it is JSON (``3``, ``true``, ``[1, 2]``), else the text itself."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def json_payload(value: Any) -> Any:
    """``value`` with every numpy array as JSON: a small one as nested lists with its dtype
    and shape, a large one by dtype and shape alone."""
    if isinstance(value, np.ndarray):
        out: dict[str, Any] = {"dtype": value.dtype.str, "shape": list(value.shape)}
        if value.size <= JSON_ARRAY_LIMIT:
            out["data"] = value.tolist()
        return out
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Mapping):
        return {str(k): json_payload(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_payload(v) for v in value]
    return value
