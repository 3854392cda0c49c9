"""Agents that send and check frames, to exercise the shared-memory frame path in tests.

Every frame's pixels follow from its sequence number (``pixels``), so a reader can tell
a right frame from a wrong one without being told what was sent.
"""

from __future__ import annotations

import time
from typing import TypedDict

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from graphrun import Agent, Input, Message, Output


class Frame(TypedDict):
    seq: int
    image: np.ndarray


class Verdict(TypedDict):
    seq: int
    right: bool


def pixels(seq: int, shape: tuple[int, ...] = (256, 320)) -> np.ndarray:
    """The frame with sequence number ``seq``: another pattern for every number."""
    row = (np.arange(shape[-1], dtype=np.uint32) * 7 + seq * 131) % 251
    return np.ascontiguousarray(np.broadcast_to((row + seq) % 256, shape), dtype=np.uint8)


class FrameSource(Agent):
    """Sends ``count`` frames, then idles; ``every_ms`` paces them."""

    frames = Output(Frame)

    class Params(BaseModel):
        model_config = ConfigDict(extra="forbid")
        count: int = 100
        height: int = 256
        width: int = 320
        every_ms: float = Field(0.0, ge=0)
        first: int = 0

    def start(self) -> None:
        self._seq = self.params.first

    def produce(self) -> None:
        if self._seq >= self.params.first + self.params.count:
            self.wait(0.05)
            return
        self.frames.send({"seq": self._seq, "image": pixels(self._seq, (self.params.height, self.params.width))})
        self._seq += 1
        if self.params.every_ms:
            self.wait(self.params.every_ms / 1000)


class FrameCheck(Agent):
    """Says of each frame whether its pixels are the ones its sequence number makes, and
    that the array it got is read-only; can be slowed down."""

    frames = Input(Frame)
    verdicts = Output(Verdict)

    class Params(BaseModel):
        model_config = ConfigDict(extra="forbid")
        delay_ms: float = Field(0.0, ge=0)

    def handle(self, msg: Message[Frame]) -> None:
        image = msg["image"]
        right = bool(np.array_equal(image, pixels(msg["seq"], image.shape))) and not image.flags.writeable
        if self.params.delay_ms:
            time.sleep(self.params.delay_ms / 1000)
        self.verdicts.send({"seq": msg["seq"], "right": right})


class FrameKeeper(Agent):
    """Keeps every frame it gets, by reference (as a preview keeps the latest ones)."""

    frames = Input(Frame)

    def start(self) -> None:
        self.kept: list[tuple[int, np.ndarray]] = []

    def handle(self, msg: Message[Frame]) -> None:
        self.kept.append((msg["seq"], msg["image"]))
