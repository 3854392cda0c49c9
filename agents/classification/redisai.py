"""The RedisAI backend, spoken in plain RESP through redis-py's ``execute_command``.

Built against the RedisAI 1.2.7 command reference: models are stored with
``AI.MODELSTORE`` (ONNX models take no INPUTS/OUTPUTS there, large blobs go as several
chunks after ``BLOB``), and each inference is one ``AI.DAGEXECUTE`` round trip whose
tensors live only inside the DAG, so nothing is left behind in the keyspace.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import redis

from graphrun_agents.errors import RedisAIError

from .model import ModelInfo

#: RedisAI's name in MODULE LIST.
MODULE_NAME = "ai"
#: What the agent runs on its models' keys (ACL): store, look up and run them.
COMMANDS = ("exists", "ai.modelstore", "ai.dagexecute", "ai.modelexecute", "ai.tensorset", "ai.tensorget")
#: Chunk size for model blobs: under Redis' default proto-max-bulk-len of 512 MB.
DEFAULT_CHUNK_BYTES = 500 * 1024 * 1024
#: RedisAI is not in the plain Redis image: the module's published images (amd64 only)...
IMAGES: dict[str, str] = {"CPU": "redislabs/redisai:1.2.7-cpu-bionic", "GPU": "redislabs/redisai:1.2.7-gpu-bionic"}
#: ...and where they keep the module.
MODULE_PATH = "/usr/lib/redis/modules/redisai.so"

_TO_REDISAI = {
    np.dtype(np.float32): "FLOAT",
    np.dtype(np.float64): "DOUBLE",
    np.dtype(np.int8): "INT8",
    np.dtype(np.int16): "INT16",
    np.dtype(np.int32): "INT32",
    np.dtype(np.int64): "INT64",
    np.dtype(np.uint8): "UINT8",
    np.dtype(np.uint16): "UINT16",
    np.dtype(np.bool_): "BOOL",
}
_FROM_REDISAI = {v: k for k, v in _TO_REDISAI.items()}

Device = Literal["CPU", "GPU"]


# --- command building ----------------------------------------------------------------


def tensor_type(dtype: np.dtype) -> str:
    try:
        return _TO_REDISAI[np.dtype(dtype)]
    except KeyError:
        raise RedisAIError(
            f"dtype {np.dtype(dtype)} has no RedisAI tensor type (supported: {', '.join(_TO_REDISAI.values())})"
        ) from None


def tensorset_args(name: str, array: np.ndarray) -> list[Any]:
    """``AI.TENSORSET name TYPE d1 .. dn BLOB bytes``; the blob is a zero-copy view when possible."""
    array = np.ascontiguousarray(array)
    return ["AI.TENSORSET", name, tensor_type(array.dtype), *array.shape, "BLOB", memoryview(array.reshape(-1).view(np.uint8))]


def modelstore_command(
    key: str,
    blob: bytes,
    *,
    device: Device = "CPU",
    tag: str | None = None,
    batch_size: int = 0,
    min_batch_size: int = 0,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
) -> list[Any]:
    """``AI.MODELSTORE key ONNX device [TAG t] [BATCHSIZE n [MINBATCHSIZE m]] BLOB chunk..``."""
    if chunk_bytes <= 0:
        raise RedisAIError(f"chunk_bytes must be positive, not {chunk_bytes}")
    command: list[Any] = ["AI.MODELSTORE", key, "ONNX", device]
    if tag is not None:
        command += ["TAG", tag]
    if batch_size:
        command += ["BATCHSIZE", batch_size]
        if min_batch_size:
            command += ["MINBATCHSIZE", min_batch_size]
    view = memoryview(blob)
    command += ["BLOB", *(view[i : i + chunk_bytes] for i in range(0, max(len(view), 1), chunk_bytes))]
    return command


def dag_command(
    model_key: str,
    inputs: Mapping[str, np.ndarray],
    input_order: Sequence[str],
    output_count: int,
    *,
    load: Sequence[str] = (),
    persist: Sequence[str] = (),
    timeout_ms: int | None = None,
) -> list[Any]:
    """One ``AI.DAGEXECUTE``: set the given tensors, execute the model, get its first output.

    ``input_order`` names the model's inputs in order: tensors set in the DAG (keys of
    ``inputs``) and keys already in Redis, listed in ``load``. Without LOAD or PERSIST
    the DAG is routed by the model key (DAGEXECUTE needs one of the three).
    """
    if output_count < 1:
        raise RedisAIError(f"a model has at least one output, not {output_count}")
    missing = [n for n in input_order if n not in inputs and n not in load]
    if missing:
        raise RedisAIError(f"model inputs {missing} are neither set in the DAG nor loaded from Redis")
    command: list[Any] = ["AI.DAGEXECUTE"]
    if load:
        command += ["LOAD", len(load), *load]
    if persist:
        command += ["PERSIST", len(persist), *persist]
    if not load and not persist:
        command += ["ROUTING", model_key]
    if timeout_ms is not None:
        command += ["TIMEOUT", timeout_ms]
    for name, array in inputs.items():
        command += ["|>", *tensorset_args(name, array)]
    outputs = [f"out{i}" for i in range(output_count)]
    command += ["|>", "AI.MODELEXECUTE", model_key, "INPUTS", len(input_order), *input_order, "OUTPUTS", output_count, *outputs]
    command += ["|>", "AI.TENSORGET", outputs[0], "META", "BLOB"]
    return command


# --- reply parsing -------------------------------------------------------------------


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, (bytes, bytearray)) else str(value)


def parse_tensor(reply: Any) -> np.ndarray:
    """The array in an ``AI.TENSORGET .. META BLOB`` reply (a flat field/value list or a map)."""
    if isinstance(reply, Mapping):
        fields = {_text(k).lower(): v for k, v in reply.items()}
    elif isinstance(reply, (list, tuple)) and len(reply) % 2 == 0:
        fields = {_text(reply[i]).lower(): reply[i + 1] for i in range(0, len(reply), 2)}
    else:
        raise RedisAIError(f"AI.TENSORGET META BLOB reply is not a field list: {reply!r:.200}")
    try:
        type_name, shape, blob = _text(fields["dtype"]), fields["shape"], fields["blob"]
    except KeyError as exc:
        raise RedisAIError(f"AI.TENSORGET reply lacks {exc.args[0]!r} (fields: {sorted(fields)})") from None
    if type_name not in _FROM_REDISAI:
        raise RedisAIError(f"AI.TENSORGET reply has unknown dtype {type_name!r}")
    dims = tuple(int(d) for d in shape)
    dtype = _FROM_REDISAI[type_name]
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(blob) != expected:
        raise RedisAIError(f"AI.TENSORGET blob has {len(blob)} bytes; {type_name} {list(dims)} needs {expected}")
    return np.frombuffer(blob, dtype=dtype).reshape(dims)


def parse_dag_reply(reply: Any) -> np.ndarray:
    """The tensor the DAG's final TENSORGET returned; raises RedisAIError for a failed step."""
    if isinstance(reply, Exception):
        raise RedisAIError(f"AI.DAGEXECUTE failed: {reply}")
    if not isinstance(reply, (list, tuple)) or not reply:
        raise RedisAIError(f"AI.DAGEXECUTE reply is not a list of step replies: {reply!r:.200}")
    for step, value in enumerate(reply):
        if isinstance(value, Exception) or (isinstance(value, bytes) and value == b"NA"):
            raise RedisAIError(f"AI.DAGEXECUTE step {step + 1} of {len(reply)} failed: {value}")
    for step, value in enumerate(reply[:-1]):
        if _text(value) != "OK":
            raise RedisAIError(f"AI.DAGEXECUTE step {step + 1} answered {value!r:.100}, not OK")
    return parse_tensor(reply[-1])


def has_ai_module(client: redis.Redis) -> bool:
    """Whether the server has RedisAI loaded (MODULE LIST names a module ``ai``)."""
    for module in client.execute_command("MODULE", "LIST") or ():
        if isinstance(module, Mapping):
            name = module.get(b"name", module.get("name"))
        else:  # RESP2 without redis-py's parser: [b"name", b"ai", b"ver", 10207]
            fields = {_text(module[i]): module[i + 1] for i in range(0, len(module) - 1, 2)}
            name = fields.get("name")
        if name is not None and _text(name).lower() == MODULE_NAME:
            return True
    return False


# --- the backend ----------------------------------------------------------------------


class RedisAIModel:
    """One model version stored in RedisAI; inference is one DAG round trip per batch."""

    backend = "redisai"

    def __init__(
        self,
        client: redis.Redis,
        key: str,
        blob: bytes,
        info: ModelInfo,
        *,
        device: Device = "CPU",
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
        timeout_ms: int | None = None,
        store: bool = True,
    ):
        self.client = client
        self.key = key
        self.info = info
        self.timeout_ms = timeout_ms
        if store:
            store_model(client, key, blob, device=device, tag=info.version, chunk_bytes=chunk_bytes)

    def run(self, batch: np.ndarray) -> np.ndarray:
        """The model's first output for ``batch``."""
        command = dag_command(
            self.key, {"in": batch}, ["in"], len(self.info.output_names), timeout_ms=self.timeout_ms
        )
        try:
            reply = self.client.execute_command(*command)
        except redis.ResponseError as exc:
            raise RedisAIError(f"AI.DAGEXECUTE on model {self.key!r} failed: {exc}") from exc
        return parse_dag_reply(reply)

    def run_with_map(self, batch: np.ndarray) -> tuple[np.ndarray, None]:
        """The first output; the DAG fetches no other, so there is no defect map on RedisAI."""
        return self.run(batch), None

    def close(self) -> None:
        """The stored model stays: other replicas, and a rollback, may use it."""


def store_model(
    client: redis.Redis, key: str, blob: bytes, *, device: Device = "CPU", tag: str | None = None,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
) -> None:
    try:
        client.execute_command(*modelstore_command(key, blob, device=device, tag=tag, chunk_bytes=chunk_bytes))
    except redis.ResponseError as exc:
        raise RedisAIError(f"AI.MODELSTORE {key} ONNX {device} ({len(blob)} bytes) failed: {exc}") from exc
