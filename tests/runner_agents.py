"""Agents that exercise the runner's delivery rules in tests/test_runner_*.py."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypedDict

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from graphrun import Agent, Input, Message, Output


class Item(TypedDict):
    seq: int


class FailingRelease(Agent):
    """Holds item 2, then, on item 1, sends an output, releases item 2 and raises.

    Whatever a raising attempt did must be undone: its output never written, its
    release not applied (item 2 stays held), and no output written twice when the
    runner hands the batch's messages over one by one.
    """

    items = Input(Item)
    copies = Output()

    def handle_batch(self, msgs: Sequence[Message]) -> None:
        held = [m for m in msgs if m["seq"] == 2]
        for m in held:
            self.hold(m)
        for m in msgs:
            if m["seq"] == 1:
                self.copies.send({"seq": 1, "attempt_failed": True})
                self.release(*held)
                raise RuntimeError("item 1 fails after releasing item 2")
            if m["seq"] != 2:
                self.copies.send({"seq": m["seq"]})


class FlakyRelay(Agent):
    """Items in ``poison`` always fail; items in ``fail_once`` fail on their first delivery."""

    items = Input(Item)
    copies = Output(Item)

    class Params(BaseModel):
        model_config = ConfigDict(extra="forbid")
        poison: list[int] = Field(default_factory=list)
        fail_once: list[int] = Field(default_factory=list)

    def start(self) -> None:
        self._failed: set[int] = set()

    def handle(self, msg: Message[Item]) -> None:
        seq = msg["seq"]
        if seq in self.params.poison:
            raise ValueError(f"poison item {seq}")
        if seq in self.params.fail_once and seq not in self._failed:
            self._failed.add(seq)
            raise ValueError(f"item {seq} fails once")
        self.copies.send({"seq": seq})


class BatchRecorder(Agent):
    """Sends, for every batch it is handed, the batch's size and the sequence numbers in it."""

    frames = Input()
    sizes = Output()

    def handle_batch(self, msgs: Sequence[Message]) -> None:
        self.sizes.send({"size": len(msgs), "seqs": [m["seq"] for m in msgs]})


class UsesInstance(Agent):
    """Writes a marker into a Redis instance that only its params name (a model store, say)."""

    items = Output(Item)

    class Params(BaseModel):
        model_config = ConfigDict(extra="forbid")
        store: str

    def start(self) -> None:
        self.redis(self.params.store).set("marker", self.name)

    def produce(self) -> None:
        self.wait(0.05)


class StopWatchingSource(Agent):
    """A source that notes, in its status, every produce() called after a stop request."""

    items = Output(Item)

    def start(self) -> None:
        self._seq = 0
        self.status["produced_while_stopping"] = 0

    def produce(self) -> None:
        if self.stopping:
            self.status["produced_while_stopping"] += 1
        self.items.send({"seq": self._seq, "pixels": np.zeros(16, np.uint8)})
        self._seq += 1
        self.wait(0.002)


class FrameSource(Agent):
    """Sends ``count`` frames of ``size`` bytes, numbered, as fast as Redis takes them."""

    frames = Output()

    class Params(BaseModel):
        model_config = ConfigDict(extra="forbid")
        count: int = 100
        size: int = 1 << 20

    def start(self) -> None:
        self._seq = 0
        self._pixels = np.zeros(self.params.size, np.uint8)

    def produce(self) -> None:
        if self._seq >= self.params.count:
            self.wait(0.05)
            return
        self.frames.send({"seq": self._seq, "image": self._pixels})
        self._seq += 1
