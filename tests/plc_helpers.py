"""Verdicts for the far-side connectors' outage tests (Modbus, OPC UA): parts of two views
sent to a real Redis, and whether the agent has handled every one."""

from __future__ import annotations

from collections.abc import Callable

import redis
from conftest import caught_up, wait_until
from graphrun import Message, codec

VIEWS = ("front", "back")


def send_part(client: redis.Redis, part_id: int) -> None:
    """A verdict of each view for ``part_id`` (every seventh part defective), as the classifiers write them."""
    for view in VIEWS:
        payload = {"part_id": part_id, "camera": view, "defective": part_id % 7 == 0, "label": "ok", "score": 0.2,
                   "threshold": 0.5, "model": "m", "model_version": "1", "backend": "onnxruntime",
                   "preprocess_ms": 1.0, "inference_ms": 1.0}
        client.xadd(f"verdicts.{view}", codec.encode(Message(payload, producer=f"cls_{view}")))


def wait_for(condition: Callable[[], bool], what: str, limit: float = 60.0) -> None:
    """Poll until ``condition`` holds; the limit only stops a broken run from hanging."""
    wait_until(condition, timeout=limit, what=what)


def every_verdict_handled(client: redis.Redis) -> bool:
    """The agent (consumer group ``plc``) has read every verdict and acknowledged it; it
    acknowledges a verdict only once its part is written, so no write is still to come."""
    return all(caught_up(client, f"verdicts.{view}", "plc") for view in VIEWS)
