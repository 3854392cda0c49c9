"""Messages survive the trip through a stream entry: payload, arrays and trace."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import numpy as np
import pytest

from graphrun import MessageFormatError
from graphrun.codec import decode, encode
from graphrun.message import Hop, Message, new_id


def round_trip(message: Message) -> Message:
    return decode({k: bytes(v) for k, v in encode(message).items()})


@pytest.mark.parametrize("dtype", ["uint8", "uint16", ">i4", "<f4", "float64", "bool", "complex64", "int64", "float16"])
@pytest.mark.parametrize("shape", [(), (0,), (7,), (3, 5), (2, 3, 4)])
def test_arrays_of_every_dtype_and_shape_come_back_equal(dtype: str, shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(0)
    array = np.asarray(rng.random(shape) * 100).astype(dtype)
    out = round_trip(Message({"a": array}))["a"]
    assert out.dtype == array.dtype and out.shape == array.shape
    np.testing.assert_array_equal(out, array)


def test_non_contiguous_views_are_sent_as_their_values() -> None:
    base = np.arange(6 * 8 * 3, dtype=np.uint16).reshape(6, 8, 3)
    views = {"strided": base[::2, 1::3], "transposed": base.T, "channel": base[..., 1], "reversed": base[::-1]}
    out = round_trip(Message(dict(views)))
    for name, view in views.items():
        np.testing.assert_array_equal(out[name], view)


def test_arrays_nested_in_mappings_and_lists_are_found() -> None:
    payload = {"frames": [np.ones((2, 2), np.uint8), {"mask": np.zeros(3, bool)}], "score": np.float32(0.5)}
    out = round_trip(Message(payload))
    np.testing.assert_array_equal(out["frames"][0], np.ones((2, 2), np.uint8))
    np.testing.assert_array_equal(out["frames"][1]["mask"], np.zeros(3, bool))
    assert out["score"] == 0.5 and isinstance(out["score"], float)


def test_large_contiguous_arrays_are_written_without_a_copy() -> None:
    frame = np.zeros((1024, 1280), np.uint8)
    fields = encode(Message({"image": frame}))
    view = fields[b"b0"]
    assert isinstance(view, memoryview)
    assert np.shares_memory(np.asarray(view), frame)


def test_received_arrays_are_read_only_views_of_the_received_bytes() -> None:
    fields = {k: bytes(v) for k, v in encode(Message({"image": np.arange(12, dtype=np.uint8)})).items()}
    image = decode(fields)["image"]
    assert not image.flags.writeable
    assert np.shares_memory(image, np.frombuffer(fields[b"b0"], np.uint8))


def test_the_envelope_keeps_id_producer_origin_time_and_hops() -> None:
    message = Message({"x": 1}, producer="cam", created=1234.5, hops=(Hop("cam", 1.0, 2.0),))
    out = round_trip(message)
    assert (out.id, out.producer, out.created, out.hops) == (message.id, "cam", 1234.5, (Hop("cam", 1.0, 2.0),))


def test_a_derived_message_keeps_the_origin_time_and_adds_a_hop() -> None:
    first = round_trip(Message({"x": 1}, producer="a", created=100.0))
    first.received = 101.0
    second = first.derive({"y": 2}, producer="b", sent=102.0)
    assert second.created == 100.0
    assert second.hops == (Hop("b", 101.0, 102.0),)


@pytest.mark.parametrize(
    "fields, complaint",
    [
        ({b"x": b"1"}, "no header"),
        ({b"h": b"{not json"}, "not valid JSON"),
        ({b"h": b'{"v": 99, "id": "a", "t0": 1, "p": {}}'}, "schema version 99"),
        ({b"h": b'{"v": 1, "id": "a", "t0": 1, "p": [1]}'}, "payload"),
        ({b"h": b'{"v": 1, "p": {}}'}, "envelope field"),
        ({b"h": b'{"v": 1, "id": "a", "t0": 1, "p": {"a": {"__ndarray__": "b0", "dtype": "<u2", "shape": [4]}}}',
          b"b0": b"\x00" * 7}, "truncated"),
        ({b"h": b'{"v": 1, "id": "a", "t0": 1, "p": {"a": {"__ndarray__": "b0", "dtype": "<u2", "shape": [4]}}}'},
         "missing"),
        ({b"h": b'{"v": 1, "id": "a", "t0": 1, "p": {"a": {"__ndarray__": "b0", "dtype": "nope", "shape": [1]}}}',
          b"b0": b"\x00"}, "bad descriptor"),
    ],
)
def test_malformed_entries_raise_a_message_format_error(fields: dict[bytes, bytes], complaint: str) -> None:
    with pytest.raises(MessageFormatError, match=complaint):
        decode(fields)


def test_payloads_that_cannot_travel_are_refused_when_sent() -> None:
    with pytest.raises(MessageFormatError, match="object"):
        encode(Message({"thing": object()}))
    with pytest.raises(MessageFormatError, match="object"):
        encode(Message({"a": np.array([None, 1], dtype=object)}))


# --- message ids ----------------------------------------------------------------------------


def test_ids_made_by_threads_at_once_are_all_different() -> None:
    made: list[list[str]] = [[] for _ in range(4)]
    threads = [threading.Thread(target=lambda out: out.extend(Message({}).id for _ in range(20_000)), args=(out,))
               for out in made]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ids = [i for out in made for i in out]
    assert len(set(ids)) == len(ids) == 80_000


def test_ids_of_other_processes_and_of_a_restart_differ_from_ours() -> None:
    code = "from graphrun.message import new_id; print(new_id(), new_id())"
    first, second = (subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                    check=True).stdout.split() for _ in range(2))  # the same program twice: a restart
    ours = [new_id() for _ in range(2)]
    assert len(set(first + second + ours)) == 6


def test_a_forked_child_does_not_repeat_its_parents_ids() -> None:
    read, write = os.pipe()
    new_id()
    pid = os.fork()
    if pid == 0:  # the child: the parent's state, counter included
        os.write(write, new_id().encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    with os.fdopen(read) as pipe:
        childs = pipe.read()
    assert childs and childs != new_id()  # without a fresh prefix, both would make the same next id
