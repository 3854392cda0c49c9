"""The MQTT agent subscribing on a real mosquitto: topics to output ports, at least once."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable

import numpy as np
import redis

from conftest import read_messages, wait_until
from graphrun.graph import Graph
from graphrun.redis_server import RedisServer
from graphrun_agents.mqtt.broker import Mosquitto
from mqtt_helpers import publish

GRAPH = """
name: line4
agents:
  mes:
    type: mqtt
    params:
      host: 127.0.0.1
      port: {port}
      client_id: line4-mes-test
      publish: {{}}
      subscribe:
        recipe: mes/+/recipe
        raw: {{topic: scanner/raw, format: bytes}}
    outputs:
      recipe: main:mes.recipe
      raw: main:scanner.raw
"""


def recipe(n: int) -> bytes:
    return json.dumps({"recipe": f"R{n}", "threshold": 0.5 + n / 100}).encode()


def test_messages_on_subscribed_topics_are_written_to_their_output_ports(
    mosquitto: Mosquitto, graph_file: Callable[[str], Graph], start_agent, redis_client: redis.Redis,
) -> None:
    publish(mosquitto.port, "mes/line4/recipe", [recipe(0)], retain=True)  # the MES's last word, before the agent
    runner = start_agent(graph_file(GRAPH.format(port=mosquitto.port)), "mes")
    wait_until(lambda: redis_client.xlen("mes.recipe") == 1, what="the retained recipe")
    publish(mosquitto.port, "mes/line4/recipe", [recipe(n) for n in range(1, 6)])
    publish(mosquitto.port, "mes/line5/recipe", [recipe(9)])
    publish(mosquitto.port, "scanner/raw", [b"\x00\x01\xfe\xff"])
    wait_until(lambda: redis_client.xlen("mes.recipe") == 7 and redis_client.xlen("scanner.raw") == 1,
               what="every message on its port")

    recipes = [m.payload for m in read_messages(redis_client, "mes.recipe")]
    assert [r["payload"]["recipe"] for r in recipes] == ["R0", "R1", "R2", "R3", "R4", "R5", "R9"]
    assert [r["topic"] for r in recipes] == ["mes/line4/recipe"] * 6 + ["mes/line5/recipe"]
    assert [r["retain"] for r in recipes] == [True] + [False] * 6
    [raw] = [m.payload for m in read_messages(redis_client, "scanner.raw")]
    np.testing.assert_array_equal(raw["payload"], np.array([0, 1, 254, 255], dtype=np.uint8))
    assert runner.status["received"] == 8


def test_a_payload_that_is_not_json_is_counted_and_not_sent(
    mosquitto: Mosquitto, graph_file: Callable[[str], Graph], start_agent, redis_client: redis.Redis,
) -> None:
    runner = start_agent(graph_file(GRAPH.format(port=mosquitto.port)), "mes")
    wait_until(lambda: runner.status.get("mqtt") == "connected", what="the agent to connect")
    publish(mosquitto.port, "mes/line4/recipe", [b"{not json", recipe(1)])
    wait_until(lambda: redis_client.xlen("mes.recipe") == 1, what="the readable recipe")
    assert runner.status["unreadable"] == 1
    assert read_messages(redis_client, "mes.recipe")[0].payload["payload"]["recipe"] == "R1"


def test_a_message_received_while_redis_is_down_is_delivered_again_by_the_broker_to_the_next_run(
    mosquitto: Mosquitto, graph_file: Callable[[str], Graph], redis_server: RedisServer, redis_client: redis.Redis,
) -> None:
    from graphrun.runner import AgentRunner

    graph = graph_file(GRAPH.format(port=mosquitto.port))

    def run() -> tuple[AgentRunner, threading.Thread]:
        runner = AgentRunner(graph, "mes", replica=0, redis_urls={"main": redis_server.url})
        thread = threading.Thread(target=runner.run, daemon=True)
        thread.start()
        return runner, thread

    first, thread = run()
    wait_until(lambda: first.status.get("mqtt") == "connected", what="the agent to connect")
    publish(mosquitto.port, "mes/line4/recipe", [recipe(1)])
    wait_until(lambda: redis_client.xlen("mes.recipe") == 1, what="the first recipe")

    redis_server.stop()
    publish(mosquitto.port, "mes/line4/recipe", [recipe(2)])  # taken by the broker, never written to Redis
    wait_until(lambda: str(first.status.get("redis", "")).startswith("unreachable"), what="the agent to see Redis go")
    first.request_stop()
    thread.join(30)
    assert not thread.is_alive()

    redis_server.start()
    second, thread = run()
    try:
        wait_until(lambda: redis_client.xlen("mes.recipe") >= 2, what="the recipe delivered again")
    finally:
        second.request_stop()
        thread.join(30)
    recipes = [m.payload["payload"]["recipe"] for m in read_messages(redis_client, "mes.recipe")]
    assert recipes[-1] == "R2" and "R2" not in recipes[:-1]


def test_a_message_received_while_redis_is_down_is_written_once_redis_returns(
    mosquitto: Mosquitto, graph_file: Callable[[str], Graph], start_agent, redis_server: RedisServer,
    redis_client: redis.Redis,
) -> None:
    runner = start_agent(graph_file(GRAPH.format(port=mosquitto.port)), "mes")
    wait_until(lambda: runner.status.get("mqtt") == "connected", what="the agent to connect")
    publish(mosquitto.port, "mes/line4/recipe", [recipe(1)])
    wait_until(lambda: redis_client.xlen("mes.recipe") == 1, what="the first recipe")

    redis_server.stop()
    publish(mosquitto.port, "mes/line4/recipe", [recipe(2)])  # the broker has it; the agent can't write it
    wait_until(lambda: str(runner.status.get("redis", "")).startswith("unreachable"), what="the agent to see Redis go")
    redis_server.start()
    wait_until(lambda: redis_client.xlen("mes.recipe") >= 2, what="the recipe written once Redis is back")
    assert [m.payload["payload"]["recipe"] for m in read_messages(redis_client, "mes.recipe")] == ["R1", "R2"]
