"""In-process inference with ONNX Runtime: the embedded default backend."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort

from graphrun_agents.errors import ModelError

from .model import DEFECT_MAP, ModelInfo, info_from_session


class OnnxRuntimeModel:
    """One loaded model version; a new version is a new instance, swapped in whole."""

    backend = "onnxruntime"

    def __init__(
        self,
        blob: bytes,
        *,
        providers: list[str] | None = None,
        intra_op_threads: int = 0,
        inter_op_threads: int = 0,
        fallback_name: str = "model",
    ):
        available = ort.get_available_providers()
        wanted = providers or ["CPUExecutionProvider"]
        chosen = [p for p in wanted if p in available]
        if not chosen:
            raise ModelError(f"none of the execution providers {wanted} is available here (available: {available})")
        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        options.inter_op_num_threads = inter_op_threads
        try:
            self.session = ort.InferenceSession(blob, options, providers=chosen)
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise ModelError(f"ONNX Runtime cannot load the model ({len(blob)} bytes): {exc}") from exc
        self.providers = self.session.get_providers()
        self.info: ModelInfo = info_from_session(self.session, blob, fallback_name=fallback_name)

    def run(self, batch: np.ndarray) -> np.ndarray:
        """The model's first output for ``batch``."""
        return self.session.run(self.info.output_names[:1], {self.info.input_name: batch})[0]

    def run_with_map(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """The first output and, if the model has one, its defect map, from one inference."""
        if not self.info.has_defect_map:
            return self.run(batch), None
        scores, cells = self.session.run([self.info.output_names[0], DEFECT_MAP], {self.info.input_name: batch})
        return scores, cells

    def close(self) -> None:
        """Nothing to release remotely; the session goes with the object."""
