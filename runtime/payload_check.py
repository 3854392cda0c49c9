"""Checking a received payload against its input port's declared type.

A port's type is a ``TypedDict``. Graph validation checks that connected ports agree on
key names; this checks each message on arrival, values included, so that a verdict
with ``score: "high"`` or ``part_id: true`` is dead-lettered with its reason before any
agent code sees it, instead of failing deep inside an agent (or, worse, being taken
for something it is not).

A checker is compiled once per port into nested closures; a check costs a few
microseconds per key. Rules: ``bool`` is not an ``int`` or a ``float``; an ``int`` is a
``float``; ``None`` only where the type allows it; ``Any`` and unparameterised
containers accept anything of their kind; keys the type does not name are allowed.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, Union

import numpy as np
from typing_extensions import NotRequired, Required, is_typeddict

# A check returns None when the value fits, else what is wrong (the path is added by callers).
Check = Callable[[Any], "str | None"]


def payload_checker(payload_type: type | None) -> Callable[[Mapping[str, Any]], str | None] | None:
    """A function returning what is wrong with a payload of ``payload_type`` (None: nothing),
    or None when the port takes any payload."""
    if payload_type is None or not is_typeddict(payload_type):
        return None
    return _typeddict(payload_type)


def _typeddict(td: type) -> Check:
    hints = typing.get_type_hints(td, include_extras=True)
    # With postponed annotations Python cannot see NotRequired in the class body: read the hints.
    optional = {name for name, hint in hints.items() if typing.get_origin(hint) is NotRequired}
    required = getattr(td, "__required_keys__", frozenset(hints)) - optional
    fields = [(name, name in required, _check(_strip(hint))) for name, hint in hints.items()]
    title = td.__name__

    def check(value: Any) -> str | None:
        if not isinstance(value, Mapping):
            return f"is {_kind(value)}, expected a mapping ({title})"
        for name, needed, check_value in fields:
            if name not in value:
                if needed:
                    return f"{title} requires key {name!r}"
                continue
            problem = check_value(value[name])
            if problem is not None:
                return _at(name, problem)
        return None

    return check


def _strip(hint: Any) -> Any:
    """NotRequired[X], Required[X] and Annotated[X, ...] check as X."""
    origin = typing.get_origin(hint)
    if origin in (NotRequired, Required, typing.Annotated):
        return _strip(typing.get_args(hint)[0])
    return hint


def _check(hint: Any) -> Check:
    if hint is Any or hint is object:
        return lambda value: None
    if hint is type(None) or hint is None:
        return lambda value: None if value is None else f"is {_kind(value)}, expected null"
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        args = typing.get_args(hint)
        if len(args) == 2 and type(None) in args:  # Optional[X]: X's own message says more
            inner = _check(_strip(next(a for a in args if a is not type(None))))
            return lambda value: None if value is None else inner(value)
        options = [_check(_strip(a)) for a in args]
        names = " or ".join(_name(a) for a in typing.get_args(hint))

        def union(value: Any) -> str | None:
            if all(option(value) is not None for option in options):
                return f"is {_kind(value)}, expected {names}"
            return None

        return union
    if is_typeddict(hint):
        return _typeddict(hint)
    if hint is bool:
        return lambda value: None if isinstance(value, bool) else f"is {_kind(value)}, expected bool"
    if hint is int:
        return lambda value: None if isinstance(value, int) and not isinstance(value, bool) else f"is {_kind(value)}, expected int"
    if hint is float:
        return lambda value: (None if isinstance(value, (int, float)) and not isinstance(value, bool)
                              else f"is {_kind(value)}, expected float")
    if hint is str:
        return lambda value: None if isinstance(value, str) else f"is {_kind(value)}, expected str"
    if hint is np.ndarray or origin is np.ndarray:
        return lambda value: None if isinstance(value, np.ndarray) else f"is {_kind(value)}, expected an array"
    if hint in (list, dict) or origin in (list, dict):
        container = origin or hint
        args = typing.get_args(hint)
        item = _check(_strip(args[-1])) if args else None

        def collection(value: Any) -> str | None:
            if not isinstance(value, container):
                return f"is {_kind(value)}, expected {container.__name__}"
            if item is not None:
                for key, element in (value.items() if container is dict else enumerate(value)):
                    problem = item(element)
                    if problem is not None:
                        return _at(f"[{key!r}]", problem)
            return None

        return collection
    return lambda value: None  # a type this checker does not know: accepted, as before


def _at(where: str, problem: str) -> str:
    """``problem`` of a value found at ``where``: 'score: is str', 'truth.label: ...', 'defects[0]: ...'."""
    if problem.startswith("["):
        return f"{where}{problem}"
    if problem.startswith("is ") or " requires key " in problem:
        return f"{where}: {problem}"
    return f"{where}.{problem}"


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, str):
        shown = value if len(value) <= 20 else value[:17] + "..."
        return f"str ({shown!r})"
    if isinstance(value, (bool, int, float)):
        return f"{type(value).__name__} ({value!r})"
    return type(value).__name__


def _name(hint: Any) -> str:
    return "null" if hint is type(None) else getattr(hint, "__name__", str(hint))
