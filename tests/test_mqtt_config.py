"""Bad MQTT agent settings are refused with the graph file's line, or at start naming what to add."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import line_of as line_in
from conftest import run_validate
from graphrun import GraphError, ParamError
from graphrun.graph import Graph
from graphrun.testing import AgentHarness
from graphrun_agents.mqtt.agent import MqttAgent

GRAPH = """\
name: line4
agents:
  mqtt:
    type: mqtt
    params:
      host: 127.0.0.1
      port: 1883
{params}
    inputs:
      results: main:plc.results
"""


def problem(graph_file: Callable[[str], Graph], params: str) -> str:
    with pytest.raises(GraphError) as caught:
        graph_file(GRAPH.format(params=params))
    return str(caught.value)


def line_of(params: str, text: str) -> int:
    """The line of ``text`` in the graph file made from ``params``."""
    return line_in(GRAPH.format(params=params), text)


def test_a_wildcard_in_a_published_topic_is_refused_at_its_line(graph_file: Callable[[str], Graph]) -> None:
    params = "      publish:\n        results: {topic: line4/+/results}"
    message = problem(graph_file, params)
    assert f"graph.yaml:{line_of(params, 'line4/+/results')}:" in message
    assert "wildcard" in message and "publish.results.topic" in message


def test_a_malformed_topic_filter_is_refused_at_its_line(graph_file: Callable[[str], Graph]) -> None:
    params = "      publish: {results: line4/results}\n      subscribe:\n        recipe: mes/#/recipe"
    message = problem(graph_file, params)
    assert f"graph.yaml:{line_of(params, 'mes/#/recipe')}:" in message
    assert "'#' must be a whole level, the last one" in message


def test_a_retained_sparkplug_message_and_a_plain_port_without_topic_are_refused(
    graph_file: Callable[[str], Graph],
) -> None:
    params = ("      sparkplug: {group_id: plant1, edge_node_id: line4}\n"
              "      publish: {results: {retain: true}}")
    message = problem(graph_file, params)
    assert f"graph.yaml:{line_of(params, 'publish:')}:" in message
    assert "never retained" in message
    message = problem(graph_file, "      publish: {results: {retain: true}}")
    assert "publish.results: give a topic" in message
    message = problem(graph_file, "      sparkplug: {group_id: plant/1, edge_node_id: line4}\n      publish: {results: {}}")
    assert "not a Sparkplug id" in message and "sparkplug.group_id" in message


def validate(tmp_path: Path, params: str) -> subprocess.CompletedProcess[str]:
    """``graphrun validate`` on the graph made from ``params``, as a user runs it."""
    path = tmp_path / "line4.yaml"
    path.write_text(GRAPH.format(params=params))
    return run_validate(path)


def test_an_input_without_a_topic_is_reported_by_validate_at_the_publish_line(tmp_path: Path) -> None:
    params = "      publish: {other: line4/other}"
    done = validate(tmp_path, params)
    assert done.returncode == 1
    line = line_of(params, "publish:")
    assert f"line4.yaml:{line}:" in done.stderr
    assert "agent 'mqtt': input 'results' has no entry in params.publish (publish: {results: <topic>})" in done.stderr
    assert "(agents.mqtt.params.publish)" in done.stderr


def test_a_subscription_without_an_output_port_is_reported_by_validate_at_its_line(tmp_path: Path) -> None:
    params = "      publish: {results: line4/results}\n      subscribe:\n        recipe: mes/recipe"
    done = validate(tmp_path, params)
    assert done.returncode == 1
    assert f"line4.yaml:{line_of(params, 'recipe: mes/recipe')}:" in done.stderr
    assert "params.subscribe.recipe has no output port in the graph" in done.stderr
    assert "(agents.mqtt.params.subscribe.recipe)" in done.stderr


def test_a_subscription_with_its_output_port_validates(tmp_path: Path) -> None:
    params = "      publish: {results: line4/results}\n      subscribe:\n        recipe: mes/recipe"
    path = tmp_path / "line4.yaml"
    path.write_text(GRAPH.format(params=params) + "    outputs: {recipe: {stream: mes.recipe}}\n")
    done = run_validate(path)
    assert done.returncode == 0, done.stderr


def test_an_agent_run_without_a_graph_file_is_stopped_at_start_naming_the_field() -> None:
    """AgentHarness loads no graph: the same check runs when the agent starts."""
    harness = AgentHarness(MqttAgent, params={"host": "127.0.0.1", "port": 1883, "publish": {"other": "line4/other"}},
                           groups={"publish": ["results"]})
    with pytest.raises(ParamError, match=r"input 'results' has no entry in params.publish") as caught:
        harness.agent.start()
    assert caught.value.path == ("publish",)
