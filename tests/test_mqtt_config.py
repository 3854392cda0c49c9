"""Bad MQTT agent settings are refused with the graph file's line, or at start naming what to add."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from graphrun import GraphError
from graphrun.graph import Graph
from graphrun.redis_server import RedisServer
from graphrun.runner import AgentRunner
from graphrun_agents.errors import AgentConfigError

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
    lines = GRAPH.format(params=params).splitlines()
    return next(i for i, line in enumerate(lines, 1) if text in line)


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


def test_an_input_without_a_topic_stops_the_start_naming_the_key_to_add(graph_file: Callable[[str], Graph]) -> None:
    graph = graph_file(GRAPH.format(params="      publish: {other: line4/other}"))
    with RedisServer(name="mqtt-config") as server:
        with pytest.raises(AgentConfigError, match=r"input 'results' has no entry in params.publish"):
            AgentRunner(graph, "mqtt", redis_urls={"main": server.url}).run(duration=5)


def test_a_subscription_without_an_output_port_stops_the_start(graph_file: Callable[[str], Graph]) -> None:
    graph = graph_file(GRAPH.format(params="      publish: {results: line4/results}\n      subscribe: {recipe: mes/recipe}"))
    with RedisServer(name="mqtt-config") as server:
        with pytest.raises(AgentConfigError, match=r"params.subscribe.recipe has no output port"):
            AgentRunner(graph, "mqtt", redis_urls={"main": server.url}).run(duration=5)
