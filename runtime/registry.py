"""Finding agent classes by the names graphs use.

A type is either a registered name (the ``graphrun.agents`` entry-point group, so
``pip install`` of a package makes ``type: mycompany.sorter`` work) or an import path
``package.module:Class``.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from importlib.metadata import entry_points

from .agent import Agent
from .errors import AgentTypeError

ENTRY_POINT_GROUP = "graphrun.agents"


@lru_cache(maxsize=1)
def registered() -> dict[str, str]:
    """Registered type names and the ``module:Class`` each points to."""
    return {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}


@contextmanager
def importable(folder: str) -> Iterator[None]:
    """``folder`` on ``sys.path`` for the block only, so that agents beside a graph file
    resolve as ``module:Class`` without that folder shadowing other modules for the rest
    of the process. What was imported from it stays imported (in ``sys.modules``)."""
    if folder in sys.path:
        yield
        return
    sys.path.append(folder)
    try:
        yield
    finally:
        if folder in sys.path:
            sys.path.remove(folder)


def resolve(type_name: str) -> type[Agent]:
    """The Agent class a graph's ``type`` names; AgentTypeError says why not."""
    target = registered().get(type_name)
    if target is None:
        if ":" not in type_name:
            known = ", ".join(sorted(registered())) or "none"
            raise AgentTypeError(f"unknown agent type {type_name!r} (registered: {known}; or use 'package.module:Class')")
        target = type_name
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise AgentTypeError(f"agent type {type_name!r}: cannot import {module_name}: {exc}") from exc
    obj = module
    for part in attr.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            raise AgentTypeError(f"agent type {type_name!r}: {module_name} has no {attr!r}")
    if not (isinstance(obj, type) and issubclass(obj, Agent)):
        raise AgentTypeError(f"agent type {type_name!r}: {target} is not a graphrun Agent class")
    return obj
