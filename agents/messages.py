"""The payload types the built-in agents exchange.

They are the contracts between agents: a camera's ``frames`` port sends ``Frame``,
a classifier's ``verdicts`` port sends ``Verdict``. graphrun checks at validation
time that connected ports agree on them.
"""

from __future__ import annotations

from typing import Any, TypedDict

import numpy as np
from typing_extensions import NotRequired


class Truth(TypedDict):
    """Ground truth of a synthetic part: what a perfect classifier would say."""

    defective: bool
    label: str  # "ok", or the defect kind: "scratch", "chip", "crack", "pitting"
    defects: list[dict[str, Any]]
    distractors: list[dict[str, Any]]


class Frame(TypedDict):
    image: np.ndarray  # HxW (mono) or HxWx3 (BGR), uint8 or uint16
    camera: str
    part_id: int
    frame: int  # the camera's own frame counter
    timestamp: float  # acquisition time, seconds since the epoch
    pixel_format: str  # the pixel format of ``image`` as sent (Mono8, Mono16, BGR8…)
    width: int
    height: int
    exposure_us: NotRequired[float | None]
    gain: NotRequired[float | None]
    truth: NotRequired[Truth | None]


class Verdict(TypedDict):
    part_id: int
    camera: str
    defective: bool
    label: str
    score: float
    threshold: float
    model: str
    model_version: str
    backend: str
    preprocess_ms: float
    inference_ms: float
    # Where the defect is, from a model with a per-cell output (the shipped one has it):
    # h x w uint8, 255 = certainly defective, over the frame pixels x, y, width, height.
    defect_map: NotRequired[np.ndarray]
    defect_map_region: NotRequired[list[int]]
    truth: NotRequired[Truth | None]


class OperatorEvent(TypedDict):
    """What an operator did at the HMI, or what its reject-rate alarm did.

    ``event`` is ``acknowledged`` (a reject: ``part_id``, ``label``, ``reason``),
    ``counters_reset`` (``shift``: the ended shift's parts, rejects, started, ended),
    ``reject_rate_alarm`` or ``reject_rate_normal`` (``window``: its size, parts,
    rejects, rate and alarm threshold).
    """

    event: str
    time: float  # seconds since the epoch
    hmi: str  # the HMI agent's name
    client: NotRequired[str]  # the address the request came from
    part_id: NotRequired[int]
    label: NotRequired[str]
    reason: NotRequired[str | None]
    shift: NotRequired[dict[str, Any]]
    window: NotRequired[dict[str, Any]]


class PlcRegisters(TypedDict):
    """One write request as the PLC received it: consecutive addresses of one table."""

    table: str  # "holding" or "coil"
    address: int
    values: list[int]  # registers, or 0/1 per coil
    fields: list[str]  # the register map entries it carries


class PlcResult(TypedDict):
    """What the Modbus agent wrote to the PLC for one part: the audit trail's last step."""

    part_id: int
    outcome: str  # "ok", "defective" or "incomplete"
    label: str
    score: float
    sequence: int  # the PLC's sequence counter after the write
    registers: list[PlcRegisters]  # every request, in the order written
    missing: list[str]  # views with no verdict (an incomplete part)
    verdicts: list[str]  # the verdicts joined, as "stream entry-id"
    time: float  # when the PLC took the last request, seconds since the epoch


class MqttMessage(TypedDict):
    """One message the MQTT agent received from its broker (a recipe change from the MES, say)."""

    topic: str  # the topic it was published to (the subscription may have had wildcards)
    payload: Any  # parsed JSON, text, or a uint8 array of the raw bytes, as the subscription's format says
    retain: bool  # the broker's retained last value, sent on subscribing, rather than a new publication
    received: float  # when the agent received it, seconds since the epoch
