"""A part's result as OPC UA values: each field converted to its node's data type.

A value that does not fit its node's type (a part id above 65535 for a UInt16 node) is
an ``EncodingError``: the agent refuses the verdict at once instead of letting it
block the queue of results behind it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from asyncua import ua

from ..errors import EncodingError
from ..part_join import Outcome, Part
from .params import Outcomes

_INT_RANGES = {
    "SByte": (-(2**7), 2**7 - 1), "Byte": (0, 2**8 - 1),
    "Int16": (-(2**15), 2**15 - 1), "UInt16": (0, 2**16 - 1),
    "Int32": (-(2**31), 2**31 - 1), "UInt32": (0, 2**32 - 1),
    "Int64": (-(2**63), 2**63 - 1), "UInt64": (0, 2**64 - 1),
}


def wrap(type_name: str) -> int:
    """The largest sequence number a node of this type holds; the count wraps to 1 after it."""
    if type_name not in _INT_RANGES:
        raise EncodingError(f"a sequence node must have an integer type, not {type_name}")
    return _INT_RANGES[type_name][1]


def next_sequence(last: int, type_name: str) -> int:
    return 1 if last >= wrap(type_name) else last + 1


def variant(field: str, value: Any, type_name: str) -> ua.Variant:
    """``value`` as a Variant of ``type_name``, or EncodingError naming ``field``."""
    if type_name in _INT_RANGES:
        low, high = _INT_RANGES[type_name]
        number = int(value)
        if not low <= number <= high:
            raise EncodingError(f"{field} {value!r} does not fit the node's type {type_name} ({low}..{high})")
        return ua.Variant(number, getattr(ua.VariantType, type_name))
    if type_name in ("Float", "Double"):
        return ua.Variant(float(value), getattr(ua.VariantType, type_name))
    if type_name == "Boolean":
        return ua.Variant(bool(value), ua.VariantType.Boolean)
    if type_name == "String":
        return ua.Variant(str(value), ua.VariantType.String)
    if type_name == "DateTime":
        if not isinstance(value, dt.datetime):
            value = dt.datetime.fromtimestamp(float(value), dt.timezone.utc)
        return ua.Variant(value, ua.VariantType.DateTime)
    raise EncodingError(f"{field}: nodes of type {type_name} are not supported")


def result_values(part: Part[Any], types: Mapping[str, str], outcomes: Outcomes, codes: Mapping[str, int],
                  *, written_at: float) -> dict[str, Any]:
    """The value of every mapped field of ``part``'s result (the sequence apart)."""
    outcome = part.outcome or Outcome.INCOMPLETE
    rejected = outcome is not Outcome.OK
    kind = types.get("outcome")
    values: dict[str, Any] = {
        "part_id": part.part_id,
        "outcome": (outcome.value if kind == "String" else rejected if kind == "Boolean"
                    else getattr(outcomes, outcome.value)),
        "defective": rejected,
        "score": part.score,
        "label": part.label,
        "code": codes.get(part.label, 0),
        "missing": ",".join(part.missing),
        "time": written_at,
    }
    return {name: values[name] for name in types if name in values}
