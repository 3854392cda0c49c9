"""MQTT payloads in plain mode: graphrun messages to JSON, and received bytes to port payloads.

A published payload is an envelope, so that a subscriber sees duplicates and gaps
without knowing the port's schema:

    {"seq": 17, "session": 1733150000123, "id": "…", "time": 1733150001.5, "data": {...}}

``seq`` counts the agent's publications from 1 within one ``session`` (the time the
agent started, in ms); ``id`` is the graphrun message id, the same when a message is
published again after a crash or a lost acknowledgement.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np

from graphrun import DeadLetter

Format = Literal["json", "text", "bytes"]


def _plain(value: Any) -> Any:
    """numpy values as JSON would hold them; anything else unknown is refused."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"a {type(value).__name__} value can't be published as JSON")


def to_json(data: Any) -> bytes:
    """``data`` (a payload, a metric) as compact UTF-8 JSON; DeadLetter for what JSON can't hold."""
    try:
        return json.dumps(data, default=_plain, separators=(",", ":"), allow_nan=False).encode()
    except (TypeError, ValueError) as exc:
        raise DeadLetter(f"payload can't be published as JSON: {exc}") from None


def envelope(payload: Mapping[str, Any], *, seq: int, session: int, message_id: str, now: float) -> bytes:
    return to_json({"seq": seq, "session": session, "id": message_id, "time": now, "data": dict(payload)})


def check_size(encoded: bytes, limit: int, where: str) -> None:
    if len(encoded) > limit:
        raise DeadLetter(f"{where}: {len(encoded)} bytes is more than max_bytes ({limit}); "
                         "publish a summary of it, not the whole message")


def decode(data: bytes, fmt: Format) -> Any:
    """A received MQTT payload as the port's ``payload`` field; ValueError if it is not ``fmt``."""
    if fmt == "bytes":
        return np.frombuffer(data, dtype=np.uint8).copy()
    text = data.decode("utf-8")  # UnicodeDecodeError is a ValueError
    if fmt == "text":
        return text
    return json.loads(text)
