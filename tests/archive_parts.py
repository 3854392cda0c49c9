"""Parts as the finger-follower line sends them, for the archive agent's tests: two frames,
two verdicts and the PLC agent's result, every message of a part with its origin time."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import redis

from graphrun import codec
from graphrun.message import Message

FRAMES = {"front": "frames.front", "back": "frames.back"}
VERDICTS = {"v_front": "verdicts.front", "v_back": "verdicts.back"}
RESULTS = "plc.results"
STREAMS = [*FRAMES.values(), *VERDICTS.values(), RESULTS]

GRAPH = """\
name: archive_test
agents:
  archive:
    type: archive
    params: {params}
    inputs:
      frames: {{front: "main:frames.front", back: "main:frames.back"}}
      verdicts: {{v_front: "main:verdicts.front", v_back: "main:verdicts.back"}}
      results: "main:plc.results"
"""


def graph_text(directory: Path, **params: Any) -> str:
    settings = {"directory": str(directory), **params}
    return GRAPH.format(params=_flow(settings))


def _flow(value: Any) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_flow(v)}" for k, v in value.items()) + "}"
    if isinstance(value, str):
        return f'"{value}"'
    return str(value)


def image(part_id: int, camera: str, shape: tuple[int, ...] = (96, 128), dtype: type = np.uint8) -> np.ndarray:
    """A picture no other part or camera has: noise seeded by both (PNG can't cheat on it)."""
    rng = np.random.default_rng(part_id * 2 + (camera == "back"))
    return rng.integers(0, np.iinfo(dtype).max, size=shape, dtype=dtype)


def frame(part_id: int, camera: str, **kw: Any) -> dict[str, Any]:
    img = kw.pop("image", None)
    img = image(part_id, camera, kw.pop("shape", (96, 128)), kw.pop("dtype", np.uint8)) if img is None else img
    return {"image": img, "camera": camera, "part_id": part_id, "frame": part_id, "timestamp": kw.pop("timestamp", time.time()),
            "pixel_format": "Mono8" if img.dtype == np.uint8 else "Mono16", "width": img.shape[1],
            "height": img.shape[0], "exposure_us": 800.0, "gain": 1.5, **kw}


def verdict(part_id: int, camera: str, *, label: str = "ok", version: str = "3") -> dict[str, Any]:
    defective = label != "ok"
    return {"part_id": part_id, "camera": camera, "defective": defective, "label": label,
            "score": 0.93 if defective else 0.04, "threshold": 0.5, "model": "finger-follower",
            "model_version": version, "backend": "onnxruntime", "preprocess_ms": 1.0, "inference_ms": 4.0}


def result(part_id: int, outcome: str, label: str, *, sequence: int | None = None, when: float | None = None) -> dict[str, Any]:
    return {"part_id": part_id, "outcome": outcome, "label": label, "score": 0.93 if outcome != "ok" else 0.04,
            "sequence": part_id if sequence is None else sequence,
            "registers": [{"table": "holding", "address": 0, "values": [part_id], "fields": ["part_id"]}],
            "missing": [], "verdicts": [], "time": time.time() if when is None else when}


def send(client: redis.Redis, stream: str, payload: dict[str, Any], created: float) -> str:
    """One message of a part, made at the part's origin time as the line's agents make them."""
    return client.xadd(stream, codec.encode(Message(payload, producer="test", created=created))).decode()


def write_part(client: redis.Redis, part_id: int, *, front: str = "ok", back: str = "ok", outcome: str | None = None,
               created: float | None = None, with_result: bool = True, when: float | None = None,
               views: tuple[str, ...] = ("front", "back"), **frame_kw: Any) -> float:
    """Write a whole part (frames, verdicts, PLC result); returns its origin time."""
    created = time.time() if created is None else created
    for camera in views:
        send(client, FRAMES[camera], frame(part_id, camera, **frame_kw), created)
    labels = {"front": front, "back": back}
    for camera in ("front", "back"):
        send(client, VERDICTS[f"v_{camera}"], verdict(part_id, camera, label=labels[camera]), created)
    if with_result:
        worst = front if front != "ok" else back
        send(client, RESULTS, result(part_id, outcome or ("defective" if worst != "ok" else "ok"), worst, when=when),
             created)
    return created
