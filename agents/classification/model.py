"""What a model file says about itself: input spec, outputs, and graphrun's metadata.

A model exported by ``training/train_defects.py`` carries its pre-processing spec,
decision threshold, name and version as ONNX metadata, so a graph only has to name
the file; graph params override any of them.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnxruntime as ort

from graphrun_agents.errors import ModelError, PreprocessConfigError

from .preprocess import PreprocessSpec, check_against_model

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

#: Metadata keys written by the training script and read by the agent.
META_PREPROCESS = "graphrun.preprocess"
META_THRESHOLD = "graphrun.threshold"
META_NAME = "graphrun.name"
META_VERSION = "graphrun.version"
META_LABELS = "graphrun.labels"
#: An optional second output: P(defective) per cell of the model's input, [N, 1, h, w]
#: (a fully convolutional model's map; ``training/defect_map.py`` adds it on export).
DEFECT_MAP = "defect_map"

#: The shipped finger-follower defect model (its card is MODEL_CARD.md beside it): package
#: data, so an installed wheel has it wherever the package is.
DEFAULT_MODEL: Traversable = resources.files("graphrun_agents.classification") / "models" / "finger_follower_defects.onnx"

_ORT_TYPES = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(float16)": np.float16,
    "tensor(uint8)": np.uint8,
    "tensor(int8)": np.int8,
    "tensor(int32)": np.int32,
    "tensor(int64)": np.int64,
}


@dataclass(frozen=True)
class ModelInfo:
    """The parts of an ONNX model the agent depends on."""

    name: str
    version: str
    sha256: str
    input_name: str
    input_shape: tuple[int | str | None, ...]
    input_dtype: np.dtype
    output_names: tuple[str, ...]
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def preprocess(self) -> dict[str, Any]:
        return json.loads(self.metadata.get(META_PREPROCESS, "{}"))

    @property
    def threshold(self) -> float | None:
        value = self.metadata.get(META_THRESHOLD)
        return None if value is None else float(value)

    @property
    def labels(self) -> tuple[str, str]:
        """(label of a good part, label of a defective one)."""
        ok, _, bad = self.metadata.get(META_LABELS, "ok,defect").partition(",")
        return ok, bad or "defect"

    @property
    def has_defect_map(self) -> bool:
        return DEFECT_MAP in self.output_names

    @property
    def fixed_batch(self) -> int | None:
        """The batch size the model is frozen to, or None if its batch axis is dynamic."""
        first = self.input_shape[0] if self.input_shape else None
        return first if isinstance(first, int) and first > 0 else None


def read_model(path: str | Path | Traversable) -> bytes:
    try:
        return (Path(path) if isinstance(path, str) else path).read_bytes()
    except OSError as exc:
        raise ModelError(f"model file {str(path)!r} cannot be read: {exc.strerror or exc}") from exc


def inspect(blob: bytes, *, fallback_name: str = "model") -> ModelInfo:
    """Reads a model's inputs, outputs and metadata (raises ModelError for a bad blob)."""
    try:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        session = ort.InferenceSession(blob, options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own untyped errors
        raise ModelError(f"not a usable ONNX model ({len(blob)} bytes): {exc}") from exc
    return info_from_session(session, blob, fallback_name=fallback_name)


def info_from_session(session: ort.InferenceSession, blob: bytes, *, fallback_name: str = "model") -> ModelInfo:
    inputs = session.get_inputs()
    if len(inputs) != 1:
        names = [i.name for i in inputs]
        raise ModelError(f"the model takes {len(inputs)} inputs {names}; an image classifier takes one")
    meta = dict(session.get_modelmeta().custom_metadata_map)
    first = inputs[0]
    if first.type not in _ORT_TYPES:
        raise ModelError(f"the model input {first.name!r} has type {first.type}, which frames can't be turned into")
    digest = hashlib.sha256(blob).hexdigest()
    return ModelInfo(
        name=meta.get(META_NAME, fallback_name),
        version=meta.get(META_VERSION, digest[:12]),
        sha256=digest,
        input_name=first.name,
        input_shape=tuple(first.shape),
        input_dtype=np.dtype(_ORT_TYPES[first.type]),
        output_names=tuple(o.name for o in session.get_outputs()),
        metadata=meta,
    )


def defect_scores(output: np.ndarray) -> np.ndarray:
    """Probability of "defective" per batch item from the model's first output.

    Accepts (N,) or (N, 1) probabilities, or (N, 2) class scores (softmaxed unless
    they already are probabilities).
    """
    out = np.asarray(output, dtype=np.float64)
    if out.ndim == 1:
        return out
    if out.ndim == 2 and out.shape[1] == 1:
        return out[:, 0]
    if out.ndim == 2 and out.shape[1] == 2:
        if np.all(out >= 0) and np.allclose(out.sum(axis=1), 1.0, atol=1e-4):
            return out[:, 1]
        shifted = np.exp(out - out.max(axis=1, keepdims=True))
        return shifted[:, 1] / shifted.sum(axis=1)
    raise ModelError(f"model output of shape {list(out.shape)}: expected (N,), (N, 1) or (N, 2) defect scores")


def map_to_bytes(cells: np.ndarray) -> np.ndarray:
    """A model's per-cell probabilities ([1, h, w] or [h, w]) as an h x w uint8 map, 255 = certain.

    A few hundred bytes in a verdict, enough to draw where the defect is.
    """
    cells = np.asarray(cells, dtype=np.float64)
    if cells.ndim == 3 and cells.shape[0] == 1:
        cells = cells[0]
    if cells.ndim != 2:
        raise ModelError(f"model output {DEFECT_MAP!r} of shape {list(cells.shape)} per frame: expected [1, h, w]")
    return np.round(np.clip(np.nan_to_num(cells), 0.0, 1.0) * 255).astype(np.uint8)


def spec_for(info: ModelInfo, overrides: dict[str, Any], version: str) -> PreprocessSpec:
    """The model's own pre-processing with the graph's overrides, checked against its input."""
    merged = {**info.preprocess, **overrides}
    try:
        spec = PreprocessSpec.model_validate(merged)
        check_against_model(spec, info.input_shape)
    except ValueError as exc:
        raise PreprocessConfigError(f"params.preprocess {merged} for model {info.name} v{version}: {exc}") from exc
    if np.dtype(spec.dtype) != info.input_dtype:
        raise PreprocessConfigError(
            f"params.preprocess.dtype {spec.dtype!r} but the input {info.input_name!r} of model {info.name} "
            f"v{version} takes {info.input_dtype}"
        )
    return spec
