"""Small ONNX models built in code, for tests and benchmarks (needs the ``onnx`` package).

They are real ONNX files that every backend runs, with outputs simple enough to
compute by hand.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import numpy as np


def _save(graph: Any, metadata: Mapping[str, str], opset: int) -> bytes:
    import onnx
    from onnx import helper

    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="graphrun")
    model.ir_version = 8  # what every ONNX Runtime of the last years reads
    for key, value in metadata.items():
        model.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(model)
    return model.SerializeToString()


def brightest_pixel_model(
    height: int = 4,
    width: int = 4,
    *,
    channels: int = 1,
    batch: int | str = "N",
    threshold: float | None = 0.5,
    version: str | None = "1",
    name: str = "brightest-pixel",
    preprocess: Mapping[str, Any] | None = None,
    opset: int = 17,
    offset: float = 0.0,
) -> bytes:
    """Scores each image by its brightest input value (plus ``offset``): a "defect" is a bright spot.

    Input ``image`` [batch, channels, height, width] float32; output ``score`` [batch].
    ``offset`` tells two versions of the model apart by their scores.
    """
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [
            helper.make_node("ReduceMax", ["image"], ["peak"], axes=[1, 2, 3], keepdims=0),
            helper.make_node("Add", ["peak", "offset"], ["score"]),
        ],
        "brightest_pixel",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [batch, channels, height, width])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, [batch])],
        initializer=[helper.make_tensor("offset", TensorProto.FLOAT, [], [offset])],
    )
    spec = {"resize": [width, height], "color": "gray" if channels == 1 else "bgr", "scale": 1 / 255}
    metadata = {"graphrun.name": name, "graphrun.preprocess": json.dumps(dict(preprocess or spec))}
    if threshold is not None:
        metadata["graphrun.threshold"] = str(threshold)
    if version is not None:
        metadata["graphrun.version"] = version
    # ReduceMax takes axes as an attribute up to opset 17 and as an input from 18.
    return _save(graph, metadata, min(opset, 17))


def fraud_model(transaction: int = 30, reference: int = 256, hidden: tuple[int, ...] = (128, 64), seed: int = 0) -> bytes:
    """The fraud-detection network of the RedisAI benchmark: dense layers over two tensors.

    Inputs ``transaction`` [1, 30] and ``reference`` [1, 256] float32; output
    ``probabilities`` [1, 2] (softmax: legitimate, fraudulent). Weights are seeded noise:
    the benchmark measures serving, not fraud detection.
    """
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    nodes = [helper.make_node("Concat", ["transaction", "reference"], ["x0"], axis=1)]
    initializers = []
    width = transaction + reference
    sizes = (*hidden, 2)
    for i, size in enumerate(sizes):
        w = (rng.standard_normal((width, size)) / np.sqrt(width)).astype(np.float32)
        b = np.zeros(size, np.float32)
        initializers += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(b, f"b{i}")]
        out = f"x{i + 1}" if i < len(sizes) - 1 else "logits"
        nodes.append(helper.make_node("Gemm", [f"x{i}" if i == 0 else f"r{i}", f"w{i}", f"b{i}"], [out]))
        if i < len(sizes) - 1:
            nodes.append(helper.make_node("Relu", [out], [f"r{i + 1}"]))
        width = size
    nodes.append(helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1))
    graph = helper.make_graph(
        nodes,
        "fraud_detection",
        [
            helper.make_tensor_value_info("transaction", TensorProto.FLOAT, [1, transaction]),
            helper.make_tensor_value_info("reference", TensorProto.FLOAT, [1, reference]),
        ],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [1, 2])],
        initializer=initializers,
    )
    return _save(graph, {"graphrun.name": "fraud-detection"}, 17)
