"""What the OPC UA agent needs of the graph's wiring is reported by ``graphrun validate``
with the graph file's line and field, before any server is reached (Agent.check_wiring)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from conftest import line_of, run_validate
from graphrun import ParamError
from graphrun.testing import AgentHarness
from graphrun_agents.opcua.agent import OpcuaAgent

GRAPH = """\
name: opcua-wiring
agents:
  cls:
    type: examples.counter
  plc:
    type: opcua
    params:
      url: opc.tcp://127.0.0.1:4840/plc/
{params}
{inputs}
"""
VERDICTS = "    inputs:\n      front: main:verdicts.front"


def validate(tmp_path: Path, text: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "opcua-wiring.yaml"
    path.write_text(text)
    return run_validate(path)


def test_verdict_inputs_without_result_nodes_are_reported_at_the_params_line(tmp_path: Path) -> None:
    text = GRAPH.format(params="      timeout: 1.0", inputs=VERDICTS)
    done = validate(tmp_path, text)
    assert done.returncode == 1
    # nodes is not in the file: the problem is shown where the params block begins
    assert f"opcua-wiring.yaml:{line_of(text, 'url: opc.tcp')}:7:" in done.stderr
    assert "agent 'plc': verdict inputs (front) but no result nodes: map at least nodes.sequence" in done.stderr
    assert "(agents.plc.params.nodes)" in done.stderr


def test_a_server_without_verdict_inputs_is_reported_at_its_mode_line(tmp_path: Path) -> None:
    text = GRAPH.format(params="      mode: server", inputs="")
    done = validate(tmp_path, text)
    assert done.returncode == 1
    assert f"opcua-wiring.yaml:{line_of(text, 'mode: server')}:" in done.stderr
    assert "mode server shows the line's verdicts: connect at least one verdict input" in done.stderr
    assert "(agents.plc.params.mode)" in done.stderr


def test_a_client_with_neither_inputs_nor_subscriptions_is_reported(tmp_path: Path) -> None:
    text = GRAPH.format(params="      nodes: {sequence: ns=2;s=Result.Sequence}", inputs="")
    done = validate(tmp_path, text)
    assert done.returncode == 1
    assert f"opcua-wiring.yaml:{line_of(text, 'url: opc.tcp')}:7:" in done.stderr
    assert "a client with nothing to do" in done.stderr and "(agents.plc.params.subscribe)" in done.stderr


def test_a_wired_client_validates(tmp_path: Path) -> None:
    text = GRAPH.format(params="      nodes: {sequence: ns=2;s=Result.Sequence}", inputs=VERDICTS)
    done = validate(tmp_path, text)
    assert done.returncode == 0, done.stderr


def test_an_agent_run_without_a_graph_file_is_stopped_at_start_naming_the_field() -> None:
    harness = AgentHarness(OpcuaAgent, params={"url": "opc.tcp://127.0.0.1:4840/plc/", "mode": "server"})
    with pytest.raises(ParamError, match="connect at least one verdict input") as caught:
        harness.agent.start()
    assert caught.value.path == ("mode",)
