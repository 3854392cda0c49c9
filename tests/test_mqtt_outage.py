"""Broker outages: a mosquitto restart in the middle of a run, a broker down at start, the agent stopped
while the broker is away. Nothing the agent took from Redis is acknowledged before the broker has it,
and nothing is lost.

The agent reaches the broker through a TCP gate (tests/mqtt_helpers.py) so that the test's own
subscriber is back on a restarted broker before the agent may publish again: a broker without
persistence forgets its subscribers when it restarts, and what it is sent before they return is
not the agent's to lose.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import pytest
import redis

from conftest import caught_up, wait_until, write_messages
from graphrun.graph import Graph
from graphrun_agents.mqtt.broker import Mosquitto
from mqtt_helpers import Gate, Subscriber, mqtt_graph

PARTS = 300
GRAPH = mqtt_graph("""\
keepalive: 2
reconnect_min: 0.05
reconnect_max: 0.2
publish: {{results: line4/results}}
""")


@pytest.fixture
def gate(mosquitto: Mosquitto) -> Iterator[Gate]:
    g = Gate(mosquitto.port)
    yield g
    g.close()


def parts(first: int, last: int) -> list[dict]:
    return [{"part_id": p, "outcome": "ok"} for p in range(first, last + 1)]


def pending(client: redis.Redis) -> int:
    try:
        return int(client.xpending("plc.results", "mqtt")["pending"])
    except redis.ResponseError:  # NOGROUP: the agent has not made its group yet
        return 0


def held(client: redis.Redis) -> set[str]:
    """Entry ids the agent has taken and not acknowledged."""
    try:
        return {e["message_id"].decode() for e in client.xpending_range("plc.results", "mqtt", "-", "+", 10_000)}
    except redis.ResponseError:  # NOGROUP: the agent has not made its group yet
        return set()


def test_a_broker_restart_in_the_middle_of_a_run_loses_nothing_and_acknowledges_nothing_early(
    mosquitto: Mosquitto, gate: Gate, graph_file: Callable[[str], Graph], start_agent, redis_client: redis.Redis,
) -> None:
    graph = graph_file(GRAPH.format(port=gate.port))
    subscriber = Subscriber(mosquitto.port, "line4/results").start()
    runner = start_agent(graph, "mqtt")
    write_messages(redis_client, "plc.results", parts(1, 100))
    wait_until(lambda: len(subscriber.messages) >= 100, what="the first 100 results")

    gate.shut()
    mosquitto.stop()  # killed: no clean shutdown, sessions gone (persistence off)
    during = set(write_messages(redis_client, "plc.results", parts(101, 200)))
    wait_until(lambda: runner.status.get("mqtt") == "unreachable", what="the agent to see the outage")
    wait_until(lambda: len(held(redis_client) & during) == 100, what="the agent to take and hold parts 101-200")
    # None is acknowledged while the broker is away (nor are results whose PUBACK the outage cut off).
    assert len(held(redis_client) & during) == 100

    mosquitto.start()
    subscriber.stop()
    subscriber.start()  # back on the new broker before the agent
    gate.open()
    write_messages(redis_client, "plc.results", parts(201, PARTS))
    wait_until(lambda: caught_up(redis_client, "plc.results", "mqtt"), what="every result acknowledged")
    wait_until(lambda: {m.json()["data"]["part_id"] for m in subscriber.messages} >= set(range(1, PARTS + 1)),
               what="every result at the subscriber")
    subscriber.stop()

    received = [m.json() for m in subscriber.messages]
    assert {m["data"]["part_id"] for m in received} == set(range(1, PARTS + 1))
    # A copy is the same message published again (its PUBACK was lost with the broker): same seq, same id.
    first_copy = {}
    for m in received:
        first_copy.setdefault(m["data"]["part_id"], (m["seq"], m["id"]))
        assert first_copy[m["data"]["part_id"]] == (m["seq"], m["id"])
    assert sorted({m["seq"] for m in received}) == list(range(1, PARTS + 1))
    assert runner.status["published"] == PARTS


def test_a_broker_down_at_start_is_waited_for_with_the_messages_held(
    mosquitto: Mosquitto, gate: Gate, graph_file: Callable[[str], Graph], start_agent, redis_client: redis.Redis,
) -> None:
    mosquitto.stop()
    gate.shut()
    runner = start_agent(graph_file(GRAPH.format(port=gate.port)), "mqtt")
    write_messages(redis_client, "plc.results", parts(1, 10))
    wait_until(lambda: pending(redis_client) == 10, what="the agent to take and hold the results")
    assert runner.status["mqtt"] == "waiting for broker"
    assert runner.status["mqtt_error"]

    mosquitto.start()
    with Subscriber(mosquitto.port, "line4/results") as subscriber:
        gate.open()
        wait_until(lambda: caught_up(redis_client, "plc.results", "mqtt"), what="the results acknowledged")
        wait_until(lambda: len(subscriber.messages) >= 10, what="the results at the subscriber")
    assert sorted(m.json()["data"]["part_id"] for m in subscriber.messages) == list(range(1, 11))
    assert runner.status["mqtt"] == "connected"
    assert runner.status["published"] == 10


def test_messages_held_when_the_agent_stops_are_published_by_its_successor(
    mosquitto: Mosquitto, gate: Gate, graph_file: Callable[[str], Graph], start_agent, redis_client: redis.Redis,
) -> None:
    graph = graph_file(GRAPH.format(port=gate.port))
    first = start_agent(graph, "mqtt")
    wait_until(lambda: first.status.get("mqtt") == "connected", what="the agent to connect")
    gate.shut()
    write_messages(redis_client, "plc.results", parts(1, 10))
    wait_until(lambda: pending(redis_client) == 10, what="the agent to take and hold the results")
    first.request_stop()
    wait_until(lambda: not any(t.name == "mqtt-0" and t.is_alive() for t in threading.enumerate()),
               what="the first agent to stop")
    assert pending(redis_client) == 10  # still not acknowledged: the broker never had them

    with Subscriber(mosquitto.port, "line4/results") as subscriber:
        gate.open()
        start_agent(graph, "mqtt", replica=0)
        wait_until(lambda: caught_up(redis_client, "plc.results", "mqtt"), what="the results acknowledged")
        wait_until(lambda: len(subscriber.messages) >= 10, what="the results at the subscriber")
    assert sorted(m.json()["data"]["part_id"] for m in subscriber.messages) == list(range(1, 11))
