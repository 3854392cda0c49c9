"""Stream entries as one line of text for people: what ``echo`` and ``dead`` print.

A frame is megabytes; its line shows what matters about it (dtype, shape, range), not
its bytes. An entry that is not a well-formed message is still shown, as its fields.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from . import codec
from .errors import MessageFormatError
from .message import Message

RAW_EXCERPT = 80  # bytes of each field shown for an entry that does not decode


def describe_array(array: np.ndarray) -> str:
    """``uint8[1024x1280] 0..255``: dtype, shape and range of an array."""
    shape = "x".join(str(n) for n in array.shape)
    if array.size == 0 or array.dtype.kind not in "biuf":
        return f"<{array.dtype}[{shape}]>"
    low, high = array.min(), array.max()
    return f"<{array.dtype}[{shape}] {low}..{high}>"


def summarize(value: Any) -> Any:
    """``value`` with every array replaced by its description, ready for ``json.dumps``."""
    if isinstance(value, np.ndarray):
        return describe_array(value)
    if isinstance(value, Mapping):
        return {str(k): summarize(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [summarize(v) for v in value]
    return value


def arrays(value: Any, path: str = "") -> Iterator[tuple[str, np.ndarray]]:
    """(dotted path, array) of every array in a payload, in payload order."""
    if isinstance(value, np.ndarray):
        yield path, value
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from arrays(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            yield from arrays(item, f"{path}.{index}" if path else str(index))


def format_age(seconds: float) -> str:
    if abs(seconds) < 1:
        return f"{seconds * 1000:.1f} ms"
    if abs(seconds) < 120:
        return f"{seconds:.2f} s"
    return f"{seconds / 60:.1f} min"


def decode(fields: Mapping[bytes, bytes]) -> tuple[Message | None, str | None]:
    """The message in an entry, or None and why it is not one. A frame no longer in shared
    memory (its slot reused, or on another host) is shown by what it was and why it is gone."""
    try:
        return codec.decode(fields, gone=_gone), None
    except MessageFormatError as exc:
        return None, str(exc)


def _gone(spec: Mapping[str, Any], why: Exception) -> str:
    try:
        dtype = str(np.dtype(spec.get("dtype")))
    except (TypeError, ValueError):
        dtype = "?"
    shape = spec.get("shape")
    shape = "x".join(str(n) for n in shape) if isinstance(shape, list) else "?"
    return f"<{dtype}[{shape}] not here: {why}>"


def payload_text(message: Message) -> str:
    return json.dumps(summarize(message.payload), separators=(", ", ": "), default=str)


def raw_text(fields: Mapping[bytes, bytes]) -> str:
    """The fields of an entry that is not a message, each cut to ``RAW_EXCERPT`` bytes."""
    parts = []
    for key, value in fields.items():
        shown = value[:RAW_EXCERPT].decode(errors="replace")
        more = f"… ({len(value)} bytes)" if len(value) > RAW_EXCERPT else ""
        parts.append(f"{key.decode(errors='replace')}={shown!r}{more}")
    return " ".join(parts)


def entry_line(entry_id: str, fields: Mapping[bytes, bytes], now: float | None = None) -> str:
    """``ID PRODUCER age AGE PAYLOAD``, or ``ID malformed: WHY FIELDS``."""
    message, why = decode(fields)
    if message is None:
        return f"{entry_id} malformed: {why}: {raw_text(fields)}"
    age = (time.time() if now is None else now) - message.created
    return f"{entry_id} {message.producer or '?'} age {format_age(age)} {payload_text(message)}"
