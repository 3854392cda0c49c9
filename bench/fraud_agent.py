"""The fraud-detection scorer that bench/client.py serves through graphrun's request path.

A graphrun agent like any other: transactions in, scores out. The model (the RedisAI
benchmark's dense network, bench/inference.py) runs in-process with ONNX Runtime; the
reference tensor lives in Redis and is read once per batch. ``handle_batch`` scores all
the transactions one read returned in one inference call: the model costs microseconds,
so what a request costs is the per-message overhead, and batching shares it out.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnxruntime as ort
from graphrun import Agent, Input, Message, Output
from pydantic import BaseModel, ConfigDict

REFERENCE = 256


def batched(model: bytes) -> bytes:
    """The model with a free batch axis (the benchmark's file fixes it at 1)."""
    import onnx

    proto = onnx.load_from_string(model)
    for value in [*proto.graph.input, *proto.graph.output]:
        value.type.tensor_type.shape.dim[0].dim_param = "N"
    return proto.SerializeToString()


class FraudScorer(Agent):
    transactions = Input()
    scores = Output()

    class Params(BaseModel):
        model_config = ConfigDict(extra="forbid")
        model: str  # ONNX file
        reference_key: str

    def start(self) -> None:
        with open(self.params.model, "rb") as f:
            blob = batched(f.read())
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        self._session = ort.InferenceSession(blob, options, providers=["CPUExecutionProvider"])
        self._redis = self.redis(self.home_redis)

    def handle(self, msg: Message) -> None:
        self.handle_batch([msg])

    def handle_batch(self, msgs: Sequence[Message]) -> None:
        reference = np.frombuffer(self._redis.get(self.params.reference_key), np.float32).reshape(1, REFERENCE)
        transactions = np.concatenate([m["transaction"] for m in msgs]).astype(np.float32, copy=False)
        references = np.broadcast_to(reference, (len(msgs), REFERENCE))
        scores = self._session.run(None, {"transaction": transactions, "reference": np.ascontiguousarray(references)})[0]
        for msg, score in zip(msgs, scores):
            self.scores.send({"fraud": float(score[1])}, parent=msg)
