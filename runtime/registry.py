"""Finding agent classes by the names graphs use.

A type is either a registered name (the ``graphrun.agents`` entry-point group, so
``pip install`` of a package makes ``type: mycompany.sorter`` work) or an import path
``package.module:Class``.
"""

from __future__ import annotations

import importlib
import sys
import traceback
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
    if not module_name or module_name.startswith(".") or not attr:
        raise AgentTypeError(f"agent type {type_name!r}: write 'package.module:Class' (no relative module)")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise AgentTypeError(f"agent type {type_name!r}: cannot import {module_name}: {exc}") from exc
    except (Exception, SystemExit) as exc:
        # An agent module is third-party code run at import: whatever it raises (a
        # SyntaxError, a missing licence, sys.exit) is a problem of the graph's type line,
        # never a crash of `graphrun validate`. KeyboardInterrupt still stops us.
        raise AgentTypeError(f"agent type {type_name!r}: cannot import {module_name}: {describe_error(exc)}") from exc
    obj = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part, None)
        except Exception as exc:  # a module-level __getattr__ may raise anything
            raise AgentTypeError(f"agent type {type_name!r}: {module_name}.{attr}: {describe_error(exc)}") from exc
        if obj is None:
            raise AgentTypeError(f"agent type {type_name!r}: {module_name} has no {attr!r}")
    if not (isinstance(obj, type) and issubclass(obj, Agent)):
        raise AgentTypeError(f"agent type {type_name!r}: {target} is not a graphrun Agent class")
    return obj


def describe_error(exc: BaseException, in_file: str | None = None) -> str:
    """``Type: message (file:line)``: what agent code raised and where, so that the graph's
    author finds the agent's own mistake without a traceback. The line shown is the
    innermost one in ``in_file`` (the agent's module) if given, else the innermost module
    body being imported (a json.loads at import points at the module, not at json)."""
    if isinstance(exc, SyntaxError):
        where = f" ({exc.filename}:{exc.lineno})" if exc.filename else ""
        return f"{type(exc).__name__}: {exc.msg}{where}"
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    frames = traceback.extract_tb(exc.__traceback__)
    if in_file is not None:
        own = [f for f in frames if f.filename == in_file]
    else:
        own = [f for f in frames if f.name == "<module>" and "importlib" not in f.filename]
    return f"{text} ({own[-1].filename}:{own[-1].lineno})" if own else text
