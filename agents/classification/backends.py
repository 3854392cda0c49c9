"""Choosing an inference backend and loading a model version into it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import numpy as np
import redis

from .model import ModelInfo, inspect
from .onnx_backend import OnnxRuntimeModel
from .params import ClassificationParams
from .redisai import RedisAIModel, has_ai_module


class LoadedModel(Protocol):
    backend: str
    info: ModelInfo

    def run(self, batch: np.ndarray) -> np.ndarray: ...
    def run_with_map(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]: ...
    def close(self) -> None: ...


def choose_backend(params: ClassificationParams, client: Callable[[str], redis.Redis]) -> tuple[str, str]:
    """(backend, why): ``auto`` takes RedisAI when the named instance has the ``ai`` module."""
    if params.backend != "auto":
        return params.backend, f"params.backend is {params.backend!r}"
    if not params.redisai:
        return "onnxruntime", "params.redisai names no Redis instance"
    try:
        loaded = has_ai_module(client(params.redisai))
    except redis.ResponseError as exc:  # MODULE LIST refused (ACL, managed Redis)
        return "onnxruntime", f"MODULE LIST on instance {params.redisai!r} failed: {exc}"
    if loaded:
        return "redisai", f"instance {params.redisai!r} has the RedisAI module (MODULE LIST)"
    return "onnxruntime", f"instance {params.redisai!r} has no 'ai' module (MODULE LIST)"


def read(backend: str, blob: bytes, params: ClassificationParams, *,
         fallback_name: str = "model") -> tuple[ModelInfo, LoadedModel | None]:
    """What a model says about itself (version, hash), read by loading it once.

    ONNX Runtime's session that reads it is the model the agent runs, so it comes back
    too; RedisAI runs the model remotely under a key its version names, so only the
    information does (give it to ``load``).
    """
    if backend == "onnxruntime":
        model = load(backend, blob, params, fallback_name=fallback_name)
        return model.info, model
    return inspect(blob, fallback_name=fallback_name), None


def load(
    backend: str,
    blob: bytes,
    params: ClassificationParams,
    *,
    ai_client: redis.Redis | None = None,
    ai_key: str = "",
    info: ModelInfo | None = None,
    fallback_name: str = "model",
) -> LoadedModel:
    """A model version ready to run on ``backend``; RedisAI stores it unless ``ai_key`` exists.

    ``info``: what ``read`` already found in this blob, so that it is not loaded again.
    """
    if backend == "onnxruntime":
        return OnnxRuntimeModel(
            blob,
            providers=params.providers,
            intra_op_threads=params.intra_op_threads,
            inter_op_threads=params.inter_op_threads,
            fallback_name=fallback_name,
        )
    assert ai_client is not None and ai_key, "the redisai backend needs a client and a model key"
    info = info or inspect(blob, fallback_name=fallback_name)
    return RedisAIModel(
        ai_client,
        ai_key,
        blob,
        info,
        device=params.device,
        chunk_bytes=params.chunk_bytes,
        timeout_ms=params.timeout_ms,
        store=not ai_client.exists(ai_key),
    )
