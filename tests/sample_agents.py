"""Agents that exist to exercise the runtime in tests."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TypedDict

from pydantic import BaseModel, ConfigDict, Field

from graphrun import Agent, AgentStartError, DeadLetter, Input, Inputs, Message, Output, Retry


class Item(TypedDict):
    seq: int


class Label(TypedDict):
    text: str


class Source(Agent):
    """Sends ``count`` items as fast as asked."""

    items = Output(Item)

    class Params(BaseModel):
        model_config = ConfigDict(extra="forbid")
        count: int = 100

    def start(self) -> None:
        self._seq = 0

    def produce(self) -> None:
        if self._seq >= self.params.count:
            self.wait(0.05)
            return
        self.items.send({"seq": self._seq})
        self._seq += 1


class Relay(Agent):
    """Copies each item to its output, with the consumer that handled it; can be slowed down."""

    items = Input(Item)
    copies = Output(Item)

    class Params(BaseModel):
        model_config = ConfigDict(extra="forbid")
        delay_ms: float = Field(0.0, ge=0)
        poison: list[int] = Field(default_factory=list, description="seqs whose handling always raises")
        reject: list[int] = Field(default_factory=list, description="seqs dead-lettered at once")
        retry_once: list[int] = Field(default_factory=list, description="seqs that ask for one retry")

    def start(self) -> None:
        self._retried: set[int] = set()

    def handle(self, msg: Message[Item]) -> None:
        seq = msg["seq"]
        if seq in self.params.poison:
            raise ValueError(f"poison item {seq}")
        if seq in self.params.reject:
            raise DeadLetter(f"item {seq} is rejected")
        if seq in self.params.retry_once and seq not in self._retried:
            self._retried.add(seq)
            raise Retry("not yet", delay=0.05)
        if self.params.delay_ms:
            time.sleep(self.params.delay_ms / 1000)
        self.copies.send({"seq": seq, "by": os.getpid()})


class Labeller(Agent):
    """Takes Labels, to check that validation refuses a wiring from Item ports."""

    labels = Input(Label)


class Joiner(Agent):
    """Holds items until one of each named input has arrived, then releases them together."""

    parts = Inputs(Item)
    joined = Output()

    def start(self) -> None:
        self._waiting: dict[int, dict[str, Message]] = {}

    def handle(self, msg: Message[Item]) -> None:
        views = self._waiting.setdefault(msg["seq"], {})
        views[msg.port or ""] = msg
        self.hold(msg)
        if set(views) == set(self.parts):
            self.joined.send({"seq": msg["seq"], "ports": sorted(views)}, parent=msg)
            self.release(*views.values())
            del self._waiting[msg["seq"]]


class CrashOnStart(Agent):
    """Crashes at start while a marker file has fewer than ``crashes`` lines, then runs."""

    items = Output(Item)

    class Params(BaseModel):
        marker: str
        crashes: int = 2

    def start(self) -> None:
        marker = Path(self.params.marker)
        starts = marker.read_text().count("\n") if marker.exists() else 0
        with marker.open("a") as f:
            f.write("start\n")
        if starts < self.params.crashes:
            raise RuntimeError(f"simulated crash #{starts + 1}")

    def produce(self) -> None:
        self.wait(0.1)


class NeedsParams(Agent):
    items = Output(Item)

    class Params(BaseModel):
        model_config = ConfigDict(extra="forbid")
        rate: float = Field(gt=0)


class Unstartable(Agent):
    """Fails at start in a way no restart could fix."""

    items = Output(Item)

    def start(self) -> None:
        raise AgentStartError("the device /dev/nothing does not exist")


class TwoSets(Agent):
    """Two sets of inputs named by the graph, of different payload types."""

    items = Inputs(Item)
    labels = Inputs(Label)
