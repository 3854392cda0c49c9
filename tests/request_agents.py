"""Agents and client processes for the request/response tests (tests/test_client.py)."""

from __future__ import annotations

import multiprocessing
import time
from typing import TypedDict

from graphrun import Agent, GraphClient, Input, Message, Output
from pydantic import BaseModel, ConfigDict, Field


class Text(TypedDict):
    text: str


class Chunker(Agent):
    """Answers a text with its words, one message each: a streamed answer."""

    texts = Input(Text)
    words = Output()

    class Params(BaseModel):
        model_config = ConfigDict(extra="forbid")
        pause_ms: float = Field(0.0, ge=0, description="between two words")

    def handle(self, msg: Message[Text]) -> None:
        for i, word in enumerate(msg["text"].split()):
            if self.params.pause_ms:
                time.sleep(self.params.pause_ms / 1000)
            self.words.send({"index": i, "word": word})


def ask_many(graph_path: str, caller: int, count: int, results: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    """One client process: ``count`` requests in flight at once, then every answer, each
    put on ``results`` as (caller, seq, answered value, answered seq), then ``None``.
    The request's value names its caller, so an answer that reached the wrong caller shows."""
    try:
        with GraphClient(graph_path, timeout=60.0, name=f"caller-{caller}") as client:
            tickets = client.submit_many("first.numbers", [{"value": caller * 100_000 + i, "seq": i}
                                                           for i in range(count)])
            answers = [client.result(t) for t in tickets]
            for i, answer in enumerate(answers):
                results.put((caller, i, answer["value"], answer["seq"]))
            results.put(("dropped", caller, client._reader.dropped))
    finally:
        results.put(None)


class ImageSize(Agent):
    """Answers an image with its shape and the fields that came with it."""

    images = Input()
    sizes = Output()

    def handle(self, msg: Message) -> None:
        fields = {k: v for k, v in msg.payload.items() if k not in ("image", "timestamp")}
        self.sizes.send({"shape": list(msg["image"].shape), "dtype": str(msg["image"].dtype), **fields})
