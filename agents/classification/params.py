"""The classification agent's graph parameters."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .preprocess import PreprocessSpec
from .redisai import DEFAULT_CHUNK_BYTES


class BatchParams(BaseModel):
    """Micro-batching: judge up to ``max_size`` frames in one inference call.

    A partial batch waits at most ``max_wait_ms`` for more frames; 0 judges whatever
    one read from the stream returned, without waiting.
    """

    model_config = ConfigDict(extra="forbid")
    max_size: int = Field(1, ge=1, le=1024)
    max_wait_ms: float = Field(0.0, ge=0, le=10_000)


class ClassificationParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(None, description="ONNX file; default: the shipped finger-follower model")
    model_name: str | None = Field(None, description="overrides the name in the model's metadata")
    model_version: str | None = Field(None, description="version of the model file; default: its metadata, else its hash")
    backend: Literal["auto", "onnxruntime", "redisai"] = "auto"
    redisai: str | None = Field(None, description="the graph's Redis instance that runs RedisAI")
    device: Literal["CPU", "GPU"] = Field("CPU", description="RedisAI device")
    providers: list[str] = Field(
        default_factory=lambda: ["CPUExecutionProvider"],
        description="ONNX Runtime execution providers, in order of preference (CUDA/TensorRT when present)",
    )
    intra_op_threads: int = Field(0, ge=0, description="ONNX Runtime threads per operator; 0: its default")
    inter_op_threads: int = Field(0, ge=0)
    timeout_ms: int | None = Field(None, gt=0, description="RedisAI MODELEXECUTE timeout")
    chunk_bytes: int = Field(DEFAULT_CHUNK_BYTES, gt=0, description="RedisAI model blob chunk size")
    threshold: float | None = Field(None, ge=0, le=1, description="defect score at or above which a part is rejected")
    preprocess: dict[str, Any] = Field(default_factory=dict, description="overrides the model's pre-processing spec")
    batch: BatchParams = Field(default_factory=BatchParams)
    registry: str | None = Field(
        None, description="Redis instance with the model versions; default: the redisai instance, else the node's"
    )
    model_updates: bool = Field(True, description="follow versions deployed with `graphrun model deploy`")
    check_interval_ms: float = Field(200.0, gt=0, description="how often the active model version is polled")

    @field_validator("preprocess")
    @classmethod
    def _known_preprocess_fields(cls, value: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(value) - set(PreprocessSpec.model_fields))
        if unknown:
            raise ValueError(f"unknown pre-processing field(s) {unknown}; known: {sorted(PreprocessSpec.model_fields)}")
        # Each field is checked alone here; the full spec is checked against the model on start.
        for name, field_value in value.items():
            if name not in ("mean", "std"):  # their length depends on the colour, known only with the model
                PreprocessSpec.model_validate({name: field_value})
        return value

    @model_validator(mode="after")
    def _redisai_needs_an_instance(self) -> ClassificationParams:
        if self.backend == "redisai" and not self.redisai:
            raise ValueError("backend 'redisai' needs params.redisai: the name of the graph's Redis instance with RedisAI")
        return self

    def registry_instance(self, home: str) -> str:
        """Where model versions live: ``registry``, else the RedisAI instance, else ``home``
        (the Redis of the agent's node, as the runtime reports it)."""
        return self.registry or self.redisai or home
