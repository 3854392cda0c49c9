"""Give an exported defect model a second output: where the defect is, per cell.

    python training/defect_map.py agents/classification/models/finger_follower_defects.onnx

The network is fully convolutional: before its part score takes the highest cell's
logit, it has a logit per 16x16-pixel cell of its input. The exported graph runs the
network on the frame and on its three flips and averages the log-probabilities of the
four part scores. This adds ``defect_map``, float32 ``[batch, 1, H/16, W/16]``: per
cell, the same geometric mean over the four passes, each pass's cells flipped back
into the frame's orientation. The part score is unchanged (same nodes, same weights);
the map is what lets the operator's screen show where the defect is.

``train_defects.py`` runs this on every export, so a retrained model has the output too.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

OUTPUT = "defect_map"


def _producers(graph: onnx.GraphProto) -> dict[str, onnx.NodeProto]:
    return {out: node for node in graph.node for out in node.output}


def _constant(graph: onnx.GraphProto, producers: dict[str, onnx.NodeProto], name: str) -> np.ndarray:
    node = producers.get(name)
    if node is not None and node.op_type == "Constant":
        return numpy_helper.to_array(node.attribute[0].t)
    for init in graph.initializer:
        if init.name == name:
            return numpy_helper.to_array(init)
    raise ValueError(f"{name!r} is not a constant")


def _cell_maps(graph: onnx.GraphProto) -> list[tuple[str, onnx.NodeProto | None]]:
    """(cell-logit map, the flip its pass made of the input or None) for each pass of the score.

    The passes are found from the score's ReduceMax over the spatial axes, and each
    pass's flip by walking its first inputs back to the graph's input.
    """
    producers = _producers(graph)
    source = graph.input[0].name
    maps = []
    for node in graph.node:
        if node.op_type != "ReduceMax":
            continue
        axes = next((helper.get_attribute_value(a) for a in node.attribute if a.name == "axes"), None)
        if list(axes or []) != [2, 3]:
            continue
        flip, name = None, node.input[0]
        while name != source:
            step = producers.get(name)
            if step is None:
                raise ValueError(f"cannot follow {name!r} back to the input {source!r}")
            if step.op_type == "Slice" and step.input[0] == source:
                steps = _constant(graph, producers, step.input[4])
                if not np.all(steps == -1):
                    raise ValueError(f"the slice {step.name!r} of the input is not a flip (steps {steps.tolist()})")
                flip = step
            name = step.input[0]
        maps.append((node.input[0], flip))
    if not maps:
        raise ValueError("no ReduceMax over axes [2, 3]: the model has no cell map to expose")
    return maps


def add_defect_map(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with the ``defect_map`` output added (a model that has it is returned as is)."""
    graph = model.graph
    if any(o.name == OUTPUT for o in graph.output):
        return model
    nodes, logps = [], []
    axis0 = "defect_map/axis0"
    nodes.append(helper.make_node("Constant", [], [axis0], value=numpy_helper.from_array(np.array([0], np.int64)),
                                  name=axis0))
    for i, (cells, flip) in enumerate(_cell_maps(graph)):
        upright = cells
        if flip is not None:  # the same reversal again puts the cells back where they are in the frame
            upright = f"defect_map/upright_{i}"
            nodes.append(helper.make_node("Slice", [cells, *flip.input[1:]], [upright], name=upright))
        prob, logp, stacked = (f"defect_map/{kind}_{i}" for kind in ("sigmoid", "log", "unsqueeze"))
        nodes += [
            helper.make_node("Sigmoid", [upright], [prob], name=prob),
            helper.make_node("Log", [prob], [logp], name=logp),
            helper.make_node("Unsqueeze", [logp, axis0], [stacked], name=stacked),
        ]
        logps.append(stacked)
    nodes += [
        helper.make_node("Concat", logps, ["defect_map/all"], axis=0, name="defect_map/all"),
        helper.make_node("ReduceMean", ["defect_map/all"], ["defect_map/mean"], axes=[0], keepdims=0,
                         name="defect_map/mean"),
        helper.make_node("Exp", ["defect_map/mean"], [OUTPUT], name=OUTPUT),
    ]
    graph.node.extend(nodes)
    graph.output.append(helper.make_tensor_value_info(OUTPUT, onnx.TensorProto.FLOAT, ["batch", 1, "cells_h", "cells_w"]))
    doc = " Second output defect_map: P(defective) per 16x16-pixel cell."
    if doc not in model.doc_string:
        model.doc_string += doc
    onnx.checker.check_model(model)
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", type=Path, help="ONNX file, rewritten in place")
    path = parser.parse_args().model
    onnx.save(add_defect_map(onnx.load(str(path))), str(path))
    print(f"{path}: outputs {[o.name for o in onnx.load(str(path)).graph.output]}")


if __name__ == "__main__":
    main()
