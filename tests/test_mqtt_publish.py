"""The MQTT agent publishing to a real mosquitto, read by a real subscriber; messages on a real Redis."""

from __future__ import annotations

from collections.abc import Callable

import redis

from conftest import caught_up, wait_until, write_messages
from graphrun.graph import Graph
from graphrun_agents.mqtt.broker import Mosquitto
from mqtt_helpers import Subscriber, mqtt_graph

GRAPH = mqtt_graph("""\
reconnect_min: 0.05
reconnect_max: 0.2
publish:
  results: {{topic: line4/results, retain: true}}
  counts: line4/counts
""", """\
results: main:plc.results
counts: main:line.counts
""")


def result(part_id: int) -> dict:
    return {"part_id": part_id, "outcome": "defective" if part_id % 5 == 0 else "ok", "score": part_id / 100}


def test_each_message_is_published_as_json_with_its_sequence_and_id_and_acknowledged_after_the_broker_has_it(
    mosquitto: Mosquitto, graph_file: Callable[[str], Graph], start_agent, redis_client: redis.Redis,
) -> None:
    graph = graph_file(GRAPH.format(port=mosquitto.port))
    with Subscriber(mosquitto.port, "line4/#") as subscriber:
        runner = start_agent(graph, "mqtt")
        wait_until(lambda: runner.status.get("mqtt") == "connected", what="the agent to connect")
        ids = write_messages(redis_client, "plc.results", [result(p) for p in range(1, 21)])
        write_messages(redis_client, "line.counts", [{"parts": 20, "rejected": 4}])
        wait_until(lambda: len(subscriber.on("line4/results")) == 20 and subscriber.on("line4/counts"),
                   what="21 messages at the subscriber")
        wait_until(lambda: caught_up(redis_client, "plc.results", "mqtt") and caught_up(redis_client, "line.counts", "mqtt"),
                   what="every message acknowledged in Redis")

    published = [m.json() for m in subscriber.on("line4/results")]
    assert [m["data"] for m in published] == [result(p) for p in range(1, 21)]
    counter = [m["seq"] for m in published] + [subscriber.on("line4/counts")[0].json()["seq"]]
    assert sorted(counter) == list(range(1, 22))  # one counter over every port, no gap, no repeat
    assert len({m["session"] for m in published}) == 1
    assert len({m["id"] for m in published}) == 20
    assert subscriber.on("line4/counts")[0].json()["data"] == {"parts": 20, "rejected": 4}
    assert runner.status["published"] == 21
    assert len(ids) == 20

    # retain: a subscriber that comes later gets the last result at once; counts are not retained.
    with Subscriber(mosquitto.port, "line4/#") as late:
        wait_until(lambda: late.on("line4/results"), what="the retained last result")
    [last] = late.on("line4/results")
    assert last.retain and last.json()["data"] == result(20)
    assert late.on("line4/counts") == []


def test_a_message_that_cannot_be_published_as_json_is_dead_lettered_and_blocks_nothing(
    mosquitto: Mosquitto, graph_file: Callable[[str], Graph], start_agent, redis_client: redis.Redis,
) -> None:
    graph = graph_file(GRAPH.format(port=mosquitto.port).replace("retain: true", "retain: false"))
    with Subscriber(mosquitto.port, "line4/results") as subscriber:
        start_agent(graph, "mqtt")
        write_messages(redis_client, "plc.results", [result(1), {"part_id": 2, "score": float("nan")}, result(3)])
        wait_until(lambda: len(subscriber.messages) == 2, what="the two publishable results")
        wait_until(lambda: redis_client.xlen("plc.results:dead") == 1, what="the dead letter")
    assert [m.json()["data"]["part_id"] for m in subscriber.messages] == [1, 3]
    assert [m.json()["seq"] for m in subscriber.messages] == [1, 2]  # a refused message leaves no gap
    [(_, fields)] = redis_client.xrange("plc.results:dead")
    assert b"JSON" in fields[b"dl:error"]


def test_the_broker_agent_runs_a_broker_for_a_demo_graph_and_starts_it_again_when_it_exits(
    graph_file: Callable[[str], Graph], start_agent, redis_client: redis.Redis,
) -> None:
    from graphrun_agents.mqtt.broker import free_port

    port = free_port()
    graph = graph_file(GRAPH.format(port=port) + f"""
  broker:
    type: mqtt.broker
    params: {{port: {port}}}
""")
    mqtt = start_agent(graph, "mqtt")  # first: it waits for the broker
    broker = start_agent(graph, "broker")
    wait_until(broker.started.is_set, what="the broker agent to start")
    with Subscriber(port, "line4/counts") as subscriber:
        write_messages(redis_client, "line.counts", [{"parts": 1}])
        wait_until(lambda: subscriber.messages, what="the message through the demo broker")
        broker.agent._broker.stop()  # mosquitto dies under the agent
        wait_until(lambda: broker.status.get("restarts") == 1, what="the broker started again")
    wait_until(lambda: mqtt.status.get("mqtt") == "connected", what="the mqtt agent back on the broker")
    assert subscriber.messages[0].json()["data"] == {"parts": 1}
