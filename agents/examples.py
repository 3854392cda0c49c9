"""Three tiny agents that show the shape of a graph: a source, a transform, a sink."""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from typing import Any, TypedDict

import numpy as np

from pydantic import BaseModel, ConfigDict, Field

from graphrun import Agent, Input, Message, Output, Pacer


class Number(TypedDict):
    value: int
    seq: int


class Counter(Agent):
    """Counts up at a fixed rate."""

    numbers = Output(Number)

    class Params(BaseModel):
        model_config = ConfigDict(extra="forbid")
        rate: float = Field(10.0, gt=0, description="numbers per second")
        start: int = 0
        count: int | None = Field(None, ge=0, description="stop producing after this many")

    def start(self) -> None:
        self._next = self.params.start
        self._sent = 0
        self._pace = Pacer(self.params.rate, catch_up=1.0)  # after a stall, at most a second's numbers at once

    def produce(self) -> None:
        if self.params.count is not None and self._sent >= self.params.count:
            self.wait(0.5)
            return
        if not self._pace.wait(self.wait):
            return
        self.numbers.send({"value": self._next, "seq": self._sent})
        self._next += 1
        self._sent += 1


class Doubler(Agent):
    """Multiplies every number by a factor."""

    numbers = Input(Number)
    doubled = Output(Number)

    class Params(BaseModel):
        model_config = ConfigDict(extra="forbid")
        factor: int = 2

    def handle(self, msg: Message[Number]) -> None:
        self.doubled.send({"value": msg["value"] * self.params.factor, "seq": msg["seq"]})


class Printer(Agent):
    """Prints every payload it receives, with the end-to-end latency of its chain."""

    values = Input()

    class Params(BaseModel):
        model_config = ConfigDict(extra="forbid")
        every: int = Field(1, ge=1, description="print one message in this many")

    def start(self) -> None:
        self._seen = 0

    def handle(self, msg: Message) -> None:
        self._seen += 1
        self.status["printed"] = self._seen
        if self._seen % self.params.every == 0:
            latency_ms = (time.time() - msg.created) * 1000
            print(f"{msg.port}: {_summary(msg.payload)} ({latency_ms:.1f} ms end to end)", file=sys.stdout, flush=True)


def _summary(value: Any) -> Any:
    """The payload with arrays shown as shape and dtype: a frame is not for a terminal."""
    if isinstance(value, np.ndarray):
        return f"<{value.dtype} {'x'.join(map(str, value.shape))}>"
    if isinstance(value, Mapping):
        return {k: _summary(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_summary(v) for v in value]
    return value
