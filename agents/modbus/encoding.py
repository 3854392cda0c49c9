"""Value encodings: Python values to 16-bit Modbus registers and back.

pymodbus's ``convert_to_registers`` handles word order but not the byte order inside a
register, which PLCs from different vendors disagree on, so both orders are applied
here with ``struct``: a value is packed big-endian, cut into 16-bit words, the words
reversed for little word order, the bytes of each word swapped for little byte order.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from typing import Literal

from ..errors import EncodingError

Encoding = Literal["bool", "int16", "uint16", "int32", "uint32", "float32"]
Order = Literal["big", "little"]

#: struct format and register count of each encoding.
FORMATS: dict[str, tuple[str, int]] = {
    "bool": ("H", 1),
    "int16": ("h", 1),
    "uint16": ("H", 1),
    "int32": ("i", 2),
    "uint32": ("I", 2),
    "float32": ("f", 2),
}

#: Inclusive value range of each integer encoding.
RANGES: dict[str, tuple[int, int]] = {
    "bool": (0, 1),
    "int16": (-(2**15), 2**15 - 1),
    "uint16": (0, 2**16 - 1),
    "int32": (-(2**31), 2**31 - 1),
    "uint32": (0, 2**32 - 1),
}


def register_count(encoding: Encoding) -> int:
    """How many 16-bit registers a value of ``encoding`` occupies."""
    return FORMATS[encoding][1]


def _swap_bytes(words: list[int]) -> list[int]:
    return [((w & 0xFF) << 8) | (w >> 8) for w in words]


def number(value: bool | int | float, encoding: Encoding, *, what: str = "value") -> int | float:
    """The number ``encode`` packs for ``value``; EncodingError if ``encoding`` can't hold it.

    On its own it checks a value without the cost of packing it, for values that are
    checked when they arrive and encoded later.
    """
    if encoding == "float32":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise EncodingError(f"{what}: {value!r} is not a number, so it can't be encoded as float32")
        if math.isfinite(value) and abs(value) > 3.4028234663852886e38:
            raise EncodingError(f"{what}: {value!r} is out of the float32 range")
        return float(value)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int):
        raise EncodingError(f"{what}: {value!r} is not an integer, so it can't be encoded as {encoding}")
    low, high = RANGES[encoding]
    if not low <= value <= high:
        raise EncodingError(f"{what}: {value!r} is out of the {encoding} range {low}..{high}")
    return int(value)


def encode(
    value: bool | int | float,
    encoding: Encoding,
    *,
    byte_order: Order = "big",
    word_order: Order = "big",
    what: str = "value",
) -> list[int]:
    """The registers holding ``value``; ``what`` names the value in errors (a map entry)."""
    fmt, count = FORMATS[encoding]
    raw = struct.pack(f">{fmt}", number(value, encoding, what=what))
    words = [int.from_bytes(raw[i : i + 2], "big") for i in range(0, 2 * count, 2)]
    if word_order == "little":
        words.reverse()
    if byte_order == "little":
        words = _swap_bytes(words)
    return words


def decode(
    registers: Sequence[int],
    encoding: Encoding,
    *,
    byte_order: Order = "big",
    word_order: Order = "big",
) -> bool | int | float:
    """The value ``registers`` hold: the inverse of ``encode``."""
    fmt, count = FORMATS[encoding]
    if len(registers) != count:
        raise EncodingError(f"{encoding} takes {count} register(s), got {len(registers)}")
    words = list(registers)
    if byte_order == "little":
        words = _swap_bytes(words)
    if word_order == "little":
        words.reverse()
    value = struct.unpack(f">{fmt}", b"".join(w.to_bytes(2, "big") for w in words))[0]
    return bool(value) if encoding == "bool" else value
