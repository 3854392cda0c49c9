"""The MQTT agent logging in to a mosquitto that only lets named users in; the password is a secret."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from conftest import caught_up, wait_until, write_messages
from graphrun.graph import Graph
from graphrun.redis_server import RedisServer
from graphrun.runner import AgentRunner
from graphrun_agents.errors import AgentConfigError
from graphrun_agents.mqtt.broker import Mosquitto, find_mosquitto
from mqtt_helpers import Subscriber, mqtt_graph

GRAPH = mqtt_graph("""\
username: line4
password_secret: mqtt_password
reconnect_max: 0.2
publish: {{results: line4/results}}
""")


@pytest.fixture
def locked_broker() -> Iterator[Mosquitto]:
    if find_mosquitto() is None:
        pytest.skip("mosquitto is not installed (tests/run installs it as root: apt-get install mosquitto)")
    with Mosquitto(users={"line4": "s3cret", "reader": "r3ader"}) as broker:
        yield broker


def test_a_wrong_password_is_refused_and_said_while_the_messages_wait(
    locked_broker: Mosquitto, graph_file: Callable[[str], Graph], start_agent, redis_client: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GRAPHRUN_MQTT_PASSWORD", "wrong")
    runner = start_agent(graph_file(GRAPH.format(port=locked_broker.port)), "mqtt")
    write_messages(redis_client, "plc.results", [{"part_id": 1}])
    wait_until(lambda: "refused" in str(runner.status.get("mqtt_error", "")), what="the refusal in the health record")
    assert runner.status["mqtt"] == "waiting for broker"
    assert runner.status["mqtt_error"].endswith("refused the connection: Not authorized")
    assert int(redis_client.xpending("plc.results", "mqtt")["pending"]) == 1  # held, not dropped


def test_the_password_from_a_secret_file_logs_the_agent_in(
    locked_broker: Mosquitto, graph_file: Callable[[str], Graph], start_agent, redis_client: redis.Redis,
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
) -> None:
    secret = tmp_path / "mqtt_password"
    secret.write_text("s3cret\n")
    monkeypatch.setenv("GRAPHRUN_MQTT_PASSWORD_FILE", str(secret))
    with Subscriber(locked_broker.port, "line4/results", username="reader", password="r3ader") as subscriber:
        start_agent(graph_file(GRAPH.format(port=locked_broker.port)), "mqtt")
        write_messages(redis_client, "plc.results", [{"part_id": 1}])
        wait_until(lambda: caught_up(redis_client, "plc.results", "mqtt"), what="the result acknowledged")
        wait_until(lambda: subscriber.messages, what="the result at the subscriber")
    assert subscriber.messages[0].json()["data"] == {"part_id": 1}


def test_a_password_secret_that_is_not_set_stops_the_start_naming_the_variables(
    graph_file: Callable[[str], Graph], monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("GRAPHRUN_MQTT_PASSWORD", raising=False)
    monkeypatch.delenv("GRAPHRUN_MQTT_PASSWORD_FILE", raising=False)
    graph = graph_file(GRAPH.format(port=1883))
    with RedisServer(name="mqtt-login") as server:
        with pytest.raises(AgentConfigError, match="GRAPHRUN_MQTT_PASSWORD or GRAPHRUN_MQTT_PASSWORD_FILE"):
            AgentRunner(graph, "mqtt", redis_urls={"main": server.url}).run(duration=5)
