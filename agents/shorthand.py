"""A plain string in a graph's params standing for one field of a mapping.

``publish: {results: plc/results}`` reads as ``{results: {topic: plc/results}}``, and an OPC UA
node given as its id reads as ``{node: ns=2;s=...}``: the short form for the common case,
the mapping when more is said. One validator builder serves every such model.
"""

from __future__ import annotations

from typing import Any

from pydantic import model_validator


def string_means(field: str) -> Any:
    """A before-validator for a pydantic model: a plain string is the value of ``field``.

    Use in the class body: ``_shorthand = string_means("topic")``.
    """

    def read(cls: type, value: Any) -> Any:
        return {field: value} if isinstance(value, str) else value

    return model_validator(mode="before")(classmethod(read))  # type: ignore[arg-type]
