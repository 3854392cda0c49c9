"""RedisAI commands as sent on the wire, and replies as redis-py hands them back.

RedisAI is not installable here, so the replies below are written from the RedisAI
1.2.7 command reference; the env-gated test in test_classification_redisai_server.py
checks the same code against a real server.
"""

from __future__ import annotations

import numpy as np
import pytest
import redis

from graphrun_agents.classification.redisai import (
    dag_command,
    has_ai_module,
    modelstore_command,
    parse_dag_reply,
    parse_tensor,
    tensorset_args,
)
from graphrun_agents.errors import RedisAIError


def wire(command: list) -> list:
    """Arguments as bytes, the way they go on the socket."""
    return [bytes(a) if isinstance(a, memoryview) else a for a in command]


def test_tensorset_sends_type_shape_and_the_raw_little_endian_blob():
    array = np.array([[1.5, -2.0]], np.float32)
    assert wire(tensorset_args("in", array)) == ["AI.TENSORSET", "in", "FLOAT", 1, 2, "BLOB", array.tobytes()]


@pytest.mark.parametrize(
    ("dtype", "name"),
    [(np.float32, "FLOAT"), (np.float64, "DOUBLE"), (np.int8, "INT8"), (np.int16, "INT16"), (np.int32, "INT32"),
     (np.int64, "INT64"), (np.uint8, "UINT8"), (np.uint16, "UINT16"), (np.bool_, "BOOL")],
)
def test_every_redisai_tensor_type_maps_from_its_numpy_dtype(dtype, name):
    assert tensorset_args("t", np.zeros((2,), dtype))[2] == name


def test_a_dtype_redisai_lacks_is_refused_by_name():
    with pytest.raises(RedisAIError, match="dtype float16 has no RedisAI tensor type"):
        tensorset_args("t", np.zeros(2, np.float16))


def test_a_strided_view_is_sent_in_logical_order():
    array = np.arange(6, dtype=np.int32).reshape(2, 3).T
    assert wire(tensorset_args("t", array))[-1] == np.ascontiguousarray(array).tobytes()


def test_modelstore_has_no_inputs_or_outputs_for_onnx_and_splits_a_large_blob_in_chunks():
    blob = bytes(range(10))
    command = wire(modelstore_command("m:1", blob, device="GPU", tag="v1", chunk_bytes=4))
    assert command == ["AI.MODELSTORE", "m:1", "ONNX", "GPU", "TAG", "v1", "BLOB", blob[:4], blob[4:8], blob[8:]]
    assert "INPUTS" not in command and "OUTPUTS" not in command


def test_modelstore_of_a_small_blob_is_one_chunk_with_optional_server_side_batching():
    command = wire(modelstore_command("m", b"abc", batch_size=8, min_batch_size=2))
    assert command == ["AI.MODELSTORE", "m", "ONNX", "CPU", "BATCHSIZE", 8, "MINBATCHSIZE", 2, "BLOB", b"abc"]


def test_an_inference_is_one_dag_routed_by_the_model_key_that_leaves_no_keys_behind():
    batch = np.zeros((2, 1, 2, 2), np.float32)
    command = wire(dag_command("graphrun:model:cls:ai:1", {"in": batch}, ["in"], 1, timeout_ms=500))
    assert command == [
        "AI.DAGEXECUTE", "ROUTING", "graphrun:model:cls:ai:1", "TIMEOUT", 500,
        "|>", "AI.TENSORSET", "in", "FLOAT", 2, 1, 2, 2, "BLOB", batch.tobytes(),
        "|>", "AI.MODELEXECUTE", "graphrun:model:cls:ai:1", "INPUTS", 1, "in", "OUTPUTS", 1, "out0",
        "|>", "AI.TENSORGET", "out0", "META", "BLOB",
    ]
    assert "PERSIST" not in command


def test_a_dag_can_load_a_reference_tensor_already_in_redis_and_name_every_model_output():
    tx = np.ones((1, 30), np.float32)
    command = wire(dag_command("fraud", {"tx": tx}, ["tx", "ref"], 2, load=["ref"]))
    assert command[:4] == ["AI.DAGEXECUTE", "LOAD", 1, "ref"]
    assert "ROUTING" not in command
    i = command.index("AI.MODELEXECUTE")
    assert command[i : i + 10] == ["AI.MODELEXECUTE", "fraud", "INPUTS", 2, "tx", "ref", "OUTPUTS", 2, "out0", "out1"]


def test_a_dag_input_that_is_neither_set_nor_loaded_is_refused():
    with pytest.raises(RedisAIError, match=r"model inputs \['ref'\] are neither set"):
        dag_command("fraud", {"tx": np.ones((1, 30), np.float32)}, ["tx", "ref"], 1)


def tensor_reply(array: np.ndarray, dtype_name: str) -> list:
    return [b"dtype", dtype_name.encode(), b"shape", list(array.shape), b"blob", array.tobytes()]


def test_a_dag_reply_yields_the_tensor_of_its_last_step():
    scores = np.array([[0.25], [0.75]], np.float32)
    out = parse_dag_reply([b"OK", b"OK", tensor_reply(scores, "FLOAT")])
    np.testing.assert_array_equal(out, scores)
    assert out.dtype == np.float32 and out.shape == (2, 1)


def test_a_tensor_reply_may_come_as_a_map_with_text_keys():
    array = np.array([1, 2, 3], np.int64)
    reply = {"dtype": "INT64", "shape": [3], "blob": array.tobytes()}
    np.testing.assert_array_equal(parse_tensor(reply), array)


def test_a_failed_dag_step_is_reported_with_its_position_and_message():
    with pytest.raises(RedisAIError, match="step 2 of 3 failed: ERR model key is empty"):
        parse_dag_reply([b"OK", redis.ResponseError("ERR model key is empty"), b"NA"])
    with pytest.raises(RedisAIError, match="step 3 of 3 failed: b'NA'"):
        parse_dag_reply([b"OK", b"OK", b"NA"])


def test_a_truncated_or_mislabelled_tensor_reply_is_refused():
    with pytest.raises(RedisAIError, match=r"has 4 bytes; FLOAT \[2\] needs 8"):
        parse_tensor([b"dtype", b"FLOAT", b"shape", [2], b"blob", b"\x00" * 4])
    with pytest.raises(RedisAIError, match="unknown dtype 'HALF'"):
        parse_tensor([b"dtype", b"HALF", b"shape", [1], b"blob", b"\x00\x00"])
    with pytest.raises(RedisAIError, match="lacks 'blob'"):
        parse_tensor([b"dtype", b"FLOAT", b"shape", [1]])


def test_module_list_without_ai_on_a_real_redis(redis_client: redis.Redis):
    assert has_ai_module(redis_client) is False


def test_module_list_replies_naming_ai_are_recognised_in_both_shapes():
    class Reply:
        def __init__(self, reply):
            self.reply = reply

        def execute_command(self, *args):
            assert args == ("MODULE", "LIST")
            return self.reply

    assert has_ai_module(Reply([{b"name": b"ai", b"ver": 10207}]))
    assert has_ai_module(Reply([[b"name", b"search", b"ver", 1], [b"name", b"ai", b"ver", 10207]]))
    assert not has_ai_module(Reply([[b"name", b"search", b"ver", 1]]))
