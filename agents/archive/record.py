"""What is kept of one part: its record (JSON) and its files, built from the joined messages.

The record holds every verdict as the classifier sent it (model and version included),
each frame's metadata (camera, frame counter, acquisition time, pixel format, exposure,
gain, ground truth of a synthetic part) with the name of its image file, the PLC result,
the views that never arrived, and the stream entries the part was made from, so that
``graphrun trace`` can follow it further.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from graphrun import Message

from ..part_join import Part
from . import images
from .files import safe_name

#: The join's view name of the PLC result.
RESULT = "results"


@dataclass
class Built:
    record: dict[str, Any]
    files: dict[str, bytes]
    model_versions: str


def origin(part: Part[Message]) -> float:
    """The part's origin: when its chain's first message was made (redelivered copies repeat it)."""
    return min(m.created for m in part.items)


def rejected(part: Part[Message], verdicts: Sequence[str]) -> bool:
    """Whether the part was rejected: by the PLC's result, or without it, by its verdicts
    (a defective one, or one missing: the PLC agent writes such a part incomplete)."""
    plc = part.views.get(RESULT)
    if plc is not None:
        return str(plc.get("outcome")) != "ok"
    return part.defective or any(v not in part.views for v in verdicts)


def model_versions(verdicts: Mapping[str, Mapping[str, Any]]) -> str:
    return ",".join(sorted({f"{v.get('model', '?')}:{v.get('model_version', '?')}" for v in verdicts.values()}))


def build(part: Part[Message], frames: Sequence[str], verdicts: Sequence[str], compression: int) -> Built:
    plc = part.views.get(RESULT)
    judged = {p: part.views[p] for p in verdicts if p in part.views}
    files: dict[str, bytes] = {}
    frame_meta: dict[str, Any] = {}
    first_frame: float | None = None
    for port in frames:
        payload = part.views.get(port)
        if payload is None:
            continue
        meta = _plain(port, payload, files, compression, skip=("image",))
        image = payload.get("image")
        if isinstance(image, np.ndarray):
            ext, data = images.encode(image, compression)
            name = f"{safe_name(port)}.{ext}"
            files[name] = data
            meta.update(file=name, dtype=str(image.dtype), shape=list(image.shape))
        frame_meta[port] = meta
        stamp = payload.get("timestamp")
        if isinstance(stamp, (int, float)):
            first_frame = stamp if first_frame is None else min(first_frame, stamp)
    start = origin(part)
    when = float(plc["time"]) if plc is not None and "time" in plc else first_frame or start
    missing = [_missing_name(v, frames, verdicts) for v in part.missing]
    record = {
        "part_id": part.part_id,
        "origin": start,
        "time": when,
        "outcome": str(plc["outcome"]) if plc is not None else ("defective" if part.defective else "incomplete"),
        "label": part.label,
        "score": part.score,
        "models": {p: f"{v.get('model', '?')}:{v.get('model_version', '?')}" for p, v in judged.items()},
        "verdicts": {p: _plain(p, v, files, compression) for p, v in judged.items()},
        "frames": frame_meta,
        "plc": None if plc is None else _plain(RESULT, plc, files, compression),
        "missing": missing,
        "messages": [f"{m.port} {m.stream} {m.entry_id}" for m in part.items],
        "stored": time.time(),
    }
    return Built(record, files, model_versions(judged))


def _missing_name(view: str, frames: Sequence[str], verdicts: Sequence[str]) -> str:
    if view == RESULT:
        return "plc result"
    if view in frames:
        return f"frame:{view}"
    return f"verdict:{view}" if view in verdicts else view


def _plain(port: str, payload: Mapping[str, Any], files: dict[str, bytes], compression: int,
           skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """A payload as JSON values; arrays (a defect map in a verdict, say) become files of their own."""
    out: dict[str, Any] = {}
    for key, value in payload.items():
        if key in skip:
            continue
        if isinstance(value, np.ndarray):
            ext, data = images.encode(value, compression)
            name = f"{safe_name(port)}.{safe_name(key)}.{ext}"
            files[name] = data
            out[key] = {"file": name, "dtype": str(value.dtype), "shape": list(value.shape)}
        else:
            out[key] = _json(value)
    return out


def _json(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value
