"""The built-in agents use graphrun's public API only, as a third-party agent package must.

The public API is what ``graphrun`` exports in ``__all__``, and the ``graphrun.testing``
harness. Everything else (``graphrun.graph``, ``graphrun.transport``...) is the engine's
own and may change without notice; an agent package that reaches into it would break
with it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import graphrun

REPO = Path(__file__).resolve().parents[1]
AGENTS = REPO / "agents"
PUBLIC_MODULES = {"graphrun", "graphrun.testing"}


def private_uses(source: str, filename: str) -> list[str]:
    """``FILE:LINE: what`` for each import of a graphrun submodule other than the public
    ones, and each ``graphrun.NAME`` attribute that ``graphrun.__all__`` does not list."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source, filename)):
        modules: list[str] = []
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules = [node.module]
            if node.module == "graphrun":
                # `from graphrun import transport` reaches a submodule as surely as a dotted import.
                found += [(node.lineno, f"from graphrun import {a.name} (not in graphrun.__all__)")
                          for a in node.names if a.name != "*" and a.name not in graphrun.__all__]
        elif (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "graphrun"
              and node.attr not in graphrun.__all__ and node.attr != "testing"):
            found.append((node.lineno, f"graphrun.{node.attr} (not in graphrun.__all__)"))
        found += [(node.lineno, f"import of {m}") for m in modules
                  if (m == "graphrun" or m.startswith("graphrun.")) and m not in PUBLIC_MODULES]
    return [f"{filename}:{line}: {what}" for line, what in sorted(found)]


def test_no_agent_module_reaches_into_graphrun_s_submodules() -> None:
    modules = sorted(AGENTS.rglob("*.py"))
    assert len(modules) > 20  # the walk found the agent packages
    problems = [p for path in modules for p in private_uses(path.read_text(encoding="utf-8"), str(path.relative_to(REPO)))]
    assert not problems, "agents/ must use graphrun's public API only:\n" + "\n".join(problems)


def test_the_check_names_the_file_and_line_of_each_private_use() -> None:
    source = """\
import graphrun.transport
from graphrun import Agent, registry
from graphrun.graph import load_graph
from graphrun.testing import AgentHarness
import graphrun
client = graphrun.transport.connect("redis://x")
"""
    assert private_uses(source, "agents/x.py") == [
        "agents/x.py:1: import of graphrun.transport",
        "agents/x.py:2: from graphrun import registry (not in graphrun.__all__)",
        "agents/x.py:3: import of graphrun.graph",
        "agents/x.py:6: graphrun.transport (not in graphrun.__all__)",
    ]


def test_everything_graphrun_exports_exists() -> None:
    assert [name for name in graphrun.__all__ if not hasattr(graphrun, name)] == []
    assert len(set(graphrun.__all__)) == len(graphrun.__all__)


def test_a_command_line_plugin_needs_nothing_beyond_the_public_api() -> None:
    """What the `model` and `plc-sim` subcommands use: a graph, its Redis URLs, a client."""
    for name in ("load_graph", "Graph", "AgentNode", "redis_url", "add_redis_option", "connect_redis"):
        assert name in graphrun.__all__, name
