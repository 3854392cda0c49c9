"""Encoding of messages as Redis stream entries, without pickle and without base64.

An entry has one JSON header field ``h`` and one raw field per array (``b0``, ``b1``…).
Arrays anywhere in the payload are replaced in the header by a small descriptor
(dtype, shape, field). Contiguous arrays are handed to the socket as memoryviews, so
a frame is not copied on the write side; on the read side each array is a read-only
``np.frombuffer`` view on the bytes that came from the socket.

With a frame store (``frames``: a ``frame_path.FrameSink``), an array of at least its
threshold is written once into shared memory instead, and its descriptor carries the
reference (``shm``) in place of a raw field; a reader on the same host gets a read-only
view on the slot, or ``FrameUnavailable`` (a ``MessageFormatError``) if it was reused.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import numpy as np

from . import frame_store
from .errors import FrameUnavailable, MessageFormatError
from .message import SCHEMA_VERSION, Hop, Message, Request

HEADER = b"h"
_ARRAY_KEY = "__ndarray__"
_SHARED = "shm"


class FrameSink(Protocol):
    """Where arrays of at least ``threshold`` bytes go instead of the entry: ``put`` gives a
    reference, or None (no room: the array is sent inline)."""

    threshold: int

    def put(self, data: memoryview) -> frame_store.Ref | None: ...


def _array_bytes(array: np.ndarray) -> memoryview:
    if array.dtype.hasobject:
        raise TypeError("arrays of Python objects cannot be sent; use a numeric dtype")
    if not array.flags.c_contiguous:
        array = np.ascontiguousarray(array)  # the one copy a strided view needs
    return memoryview(array.reshape(-1).view(np.uint8))


def encode(message: Message, frames: FrameSink | None = None) -> dict[bytes, Any]:
    """The stream fields for ``message``; array fields are zero-copy memoryviews, or
    references into ``frames`` for arrays of at least its threshold."""
    fields: dict[bytes, Any] = {}
    shared = 0

    def default(value: Any) -> Any:
        nonlocal shared
        if isinstance(value, np.ndarray):
            data = _array_bytes(value)
            if frames is not None and len(data) >= frames.threshold:
                ref = frames.put(data)
                if ref is not None:
                    shared += 1
                    return {_ARRAY_KEY: f"s{shared}", "dtype": value.dtype.str, "shape": list(value.shape),
                            _SHARED: ref.encode()}
            name = f"b{len(fields)}"
            fields[name.encode()] = data
            return {_ARRAY_KEY: name, "dtype": value.dtype.str, "shape": list(value.shape)}
        if isinstance(value, np.generic):
            return value.item()
        if isinstance(value, (set, frozenset, tuple)):
            return list(value)
        raise TypeError(f"{type(value).__name__} is not a JSON value or a numpy array")

    header = {
        "v": message.schema,
        "id": message.id,
        "from": message.producer,
        "t0": message.created,
        "hops": [[h.agent, h.received, h.sent] for h in message.hops],
        "p": message.payload,
    }
    if message.request is not None:
        r = message.request
        header["rq"] = {"id": r.id, "to": list(r.reply), "ans": r.answer, "dl": r.deadline, "pri": r.priority}
    try:
        text = json.dumps(header, default=default, allow_nan=True, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise MessageFormatError(f"payload cannot be encoded: {exc}") from exc
    return {HEADER: text.encode(), **fields}


def decode(fields: Mapping[bytes, bytes], *,
           gone: Callable[[Mapping[str, Any], FrameUnavailable], Any] | None = None) -> Message:
    """The message in a stream entry; raises MessageFormatError for anything malformed.

    ``gone``: what stands for an array whose frame is no longer in shared memory (given
    its descriptor and why), for tools that show the rest of such a message; without it,
    ``FrameUnavailable`` is raised."""
    raw = fields.get(HEADER)
    if raw is None:
        raise MessageFormatError(f"entry has no header field 'h' (fields: {sorted(k.decode(errors='replace') for k in fields)})")

    def object_hook(obj: dict[str, Any]) -> Any:
        name = obj.get(_ARRAY_KEY)
        if name is None:
            return obj
        if gone is not None and obj.get(_SHARED) is not None:
            try:
                return _array(fields, name, obj)
            except FrameUnavailable as exc:
                return gone(obj, exc)
        return _array(fields, name, obj)

    try:
        header = json.loads(raw, object_hook=object_hook)
    except (ValueError, UnicodeDecodeError) as exc:
        raise MessageFormatError(f"header is not valid JSON: {exc}") from exc
    if not isinstance(header, dict):
        raise MessageFormatError("header is not a JSON object")
    version = header.get("v")
    if version != SCHEMA_VERSION:
        raise MessageFormatError(f"unsupported message schema version {version!r} (this runtime reads {SCHEMA_VERSION})")
    payload = header.get("p")
    if not isinstance(payload, dict):
        raise MessageFormatError("message payload is missing or not a mapping")
    try:
        hops = tuple(Hop(str(a), float(r), float(s)) for a, r, s in header.get("hops", ()))
        return Message(
            payload,
            id=str(header["id"]),
            producer=str(header.get("from", "")),
            created=float(header["t0"]),
            hops=hops,
            schema=version,
            request=_request(header.get("rq")),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise MessageFormatError(f"envelope field is missing or malformed: {exc!r}") from exc


def inline_frames(fields: Mapping[bytes, Any]) -> Mapping[bytes, Any]:
    """The entry with the frames it refers to in shared memory copied in as raw fields, as
    if it had been written inline: what a recording keeps, so that it outlives the slots.
    A frame no longer in its slot stays a reference (decoding it says why)."""
    raw = fields.get(HEADER)
    if raw is None or b'"' + _SHARED.encode() + b'"' not in raw:
        return fields  # nothing in shared memory: as it is, no copy
    out = dict(fields)

    def object_hook(obj: dict[str, Any]) -> Any:
        shared = obj.get(_SHARED)
        if obj.get(_ARRAY_KEY) is None or shared is None:
            return obj
        try:
            data = bytes(frame_store.view(frame_store.Ref.decode(shared)))
        except MessageFormatError:
            return obj
        name = next(f"b{n}" for n in range(len(out) + 1) if f"b{n}".encode() not in out)
        out[name.encode()] = data
        return {_ARRAY_KEY: name, "dtype": obj.get("dtype"), "shape": obj.get("shape")}

    try:
        header = json.loads(raw, object_hook=object_hook)
    except (ValueError, UnicodeDecodeError):
        return fields  # not a message: kept as it is
    out[HEADER] = json.dumps(header, allow_nan=True, separators=(",", ":")).encode()
    return out


def _request(raw: Any) -> Request | None:
    """The request an envelope carries, if any; KeyError, TypeError or ValueError if malformed."""
    if raw is None:
        return None
    instance, key = raw["to"]
    deadline = raw.get("dl")
    return Request(str(raw["id"]), (str(instance), str(key)), str(raw["ans"]),
                   None if deadline is None else float(deadline), int(raw.get("pri", 0)))


def _array(fields: Mapping[bytes, bytes], name: Any, spec: dict[str, Any]) -> np.ndarray:
    shared = spec.get(_SHARED)
    try:
        buffer = frame_store.view(frame_store.Ref.decode(shared)) if shared is not None else fields[str(name).encode()]
    except KeyError:
        raise MessageFormatError(f"array field {name!r} is missing from the entry") from None
    try:
        dtype = np.dtype(spec["dtype"])
    except (KeyError, TypeError, ValueError) as exc:
        raise MessageFormatError(f"array {name!r} has a bad descriptor: {exc}") from exc
    shape = spec.get("shape")
    if not isinstance(shape, list) or not all(type(n) is int and n >= 0 for n in shape):
        raise MessageFormatError(f"array {name!r} has a bad shape {shape!r}: expected a list of non-negative integers")
    shape = tuple(shape)
    if dtype.hasobject:
        raise MessageFormatError(f"array {name!r} declares an object dtype")
    expected = math.prod(shape) * dtype.itemsize
    if len(buffer) != expected:
        raise MessageFormatError(
            f"array {name!r} is truncated or oversized: {len(buffer)} bytes for shape {list(shape)} "
            f"of {dtype} ({expected} bytes)"
        )
    return np.frombuffer(buffer, dtype=dtype).reshape(shape)
