"""`graphrun validate` survives any file it is given: broken agent modules, bytes that are
not text, YAML built to exhaust memory or the stack, and wirings that would run forever.

Each case ends in ``FILE:LINE:COL: message`` problems, never in a traceback or a hang.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from graphrun import GraphError, registry
from graphrun.errors import Problem
from graphrun.graph import load_graph, parse_graph

TESTS = Path(__file__).parent

GOOD = """\
name: t
redis:
  main: {}
agents:
  source:
    type: sample_agents:Source
    outputs: {items: main:t.items}
  relay:
    type: sample_agents:Relay
    inputs: {items: source.items}
"""


def problems_in(text: str, environ: dict[str, str] | None = None) -> list[Problem]:
    with pytest.raises(GraphError) as caught:
        parse_graph(textwrap.dedent(text), "g.yaml", environ=environ or {})
    return caught.value.problems


def only(text: str, environ: dict[str, str] | None = None) -> Problem:
    found = problems_in(text, environ)
    assert len(found) == 1, [str(p) for p in found]
    return found[0]


def problems_in_file(path: Path) -> list[Problem]:
    with pytest.raises(GraphError) as caught:
        load_graph(path)
    return caught.value.problems


def validate(path: Path) -> subprocess.CompletedProcess[str]:
    """``graphrun validate PATH`` as a user runs it (the test agents importable)."""
    return subprocess.run([sys.executable, "-m", "graphrun", "validate", str(path)], capture_output=True, text=True,
                          env={"PYTHONPATH": str(TESTS), "PATH": "/usr/bin:/bin"}, timeout=60)


def graph_using(tmp_path: Path, agent_type: str) -> Path:
    """A graph file in ``tmp_path`` whose agent ``broken`` has its type on line 12 has type ``agent_type``."""
    path = tmp_path / "g.yaml"
    path.write_text(GOOD + f"  broken:\n    type: {agent_type}\n")
    return path


# --- 1. agent modules that fail to import ---------------------------------------------------


def test_an_agent_module_raising_at_import_is_reported_at_its_type_line(tmp_path: Path) -> None:
    (tmp_path / "licensed_camera.py").write_text("raise RuntimeError('no licence for the camera SDK')\n")
    [problem] = problems_in_file(graph_using(tmp_path, "licensed_camera:Camera"))
    assert (problem.line, problem.column, problem.path) == (12, 11, "agents.broken.type")
    assert "cannot import licensed_camera" in problem.message
    assert "RuntimeError: no licence for the camera SDK" in problem.message
    assert "licensed_camera.py:1" in problem.message  # where in the module it failed


def test_an_agent_module_with_a_syntax_error_is_reported_with_the_module_s_line(tmp_path: Path) -> None:
    (tmp_path / "half_written.py").write_text("from graphrun import Agent\n\nclass Sorter(Agent:\n    pass\n")
    [problem] = problems_in_file(graph_using(tmp_path, "half_written:Sorter"))
    assert (problem.line, problem.path) == (12, "agents.broken.type")
    assert "SyntaxError" in problem.message and "half_written.py:3" in problem.message


def test_an_agent_module_exiting_at_import_does_not_end_validation(tmp_path: Path) -> None:
    (tmp_path / "exits_early.py").write_text("import sys\nsys.exit('no display')\n")
    [problem] = problems_in_file(graph_using(tmp_path, "exits_early:Agent"))
    assert problem.line == 12 and "SystemExit: no display" in problem.message


def test_a_registered_agent_type_whose_module_raises_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "plant_sorter.py").write_text("import json\nCONFIG = json.loads('{not json')\n")
    monkeypatch.setattr(registry, "registered", lambda: {"plant.sorter": "plant_sorter:Sorter"})
    [problem] = problems_in_file(graph_using(tmp_path, "plant.sorter"))
    assert (problem.line, problem.path) == (12, "agents.broken.type")
    assert "agent type 'plant.sorter'" in problem.message and "JSONDecodeError" in problem.message


@pytest.mark.parametrize("agent_type", [":Sorter", ".relative:Sorter", "sample_agents:"])
def test_malformed_module_class_names_are_reported(tmp_path: Path, agent_type: str) -> None:
    [problem] = problems_in_file(graph_using(tmp_path, f"'{agent_type}'"))
    assert (problem.line, problem.path) == (12, "agents.broken.type")


def test_the_validate_command_reports_a_broken_agent_module_without_a_traceback(tmp_path: Path) -> None:
    (tmp_path / "zero_agent.py").write_text("RATE = 1 / 0\n")
    path = graph_using(tmp_path, "zero_agent:Agent")
    done = validate(path)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.startswith(f"{path}:12:11: agent type 'zero_agent:Agent': cannot import zero_agent: "
                                  "ZeroDivisionError: division by zero")
