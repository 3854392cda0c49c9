"""Sparkplug B on a real mosquitto: births, data and deaths, decoded with the published schema."""

from __future__ import annotations

from collections.abc import Callable

import redis

from conftest import caught_up, wait_until, write_messages
from graphrun.graph import Graph
from graphrun_agents.mqtt.broker import Mosquitto
from graphrun_agents.mqtt.sparkplug import EdgeNode, value_of
from graphrun_agents.mqtt.sparkplug_b_pb2 import Payload
from mqtt_helpers import Gate, Subscriber, mqtt_graph, publish

BASE = "spBv1.0/plant1"
GRAPH = mqtt_graph("""\
keepalive: 2
reconnect_min: 0.05
reconnect_max: 0.2
sparkplug: {{group_id: plant1, edge_node_id: line4{device}}}
publish: {{verdicts: {{}}}}
""", "verdicts: main:cls.verdicts")


def verdict(part_id: int, **extra: object) -> dict:
    return {"part_id": part_id, "defective": part_id % 2 == 0, "label": "crack" if part_id % 2 == 0 else "ok",
            "score": part_id / 10, "model": {"name": "defects", "version": "3"}, **extra}


def metrics(raw: bytes) -> tuple[Payload, dict]:
    payload = Payload.FromString(raw)
    return payload, {m.name: value_of(m) for m in payload.metrics}


def test_a_device_is_born_then_publishes_its_messages_as_typed_metrics_with_sequence_numbers_and_dies_at_stop(
    mosquitto: Mosquitto, graph_file: Callable[[str], Graph], start_agent, redis_client: redis.Redis,
) -> None:
    graph = graph_file(GRAPH.format(port=mosquitto.port, device=", device_id: vision"))
    with Subscriber(mosquitto.port, f"{BASE}/#") as subscriber:
        runner = start_agent(graph, "mqtt")
        write_messages(redis_client, "cls.verdicts", [verdict(p) for p in (1, 2, 3)])
        wait_until(lambda: len(subscriber.on(f"{BASE}/DDATA/line4/vision")) == 3, what="three DDATA messages")
        wait_until(lambda: caught_up(redis_client, "cls.verdicts", "mqtt"), what="the verdicts acknowledged")
        runner.request_stop()
        wait_until(lambda: subscriber.on(f"{BASE}/NDEATH/line4"), what="the NDEATH at stop")

    topics = [m.topic.removeprefix(BASE + "/") for m in subscriber.messages]
    # The session's births first, then a DBIRTH declaring the verdict's metrics once they are known.
    assert topics[0] == "NBIRTH/line4" and topics[-1] == "NDEATH/line4"
    nbirth, node_metrics = metrics(subscriber.messages[0].payload)
    assert nbirth.seq == 0 and node_metrics["Node Control/Rebirth"] is False
    _, death_metrics = metrics(subscriber.messages[-1].payload)
    assert death_metrics["bdSeq"] == node_metrics["bdSeq"]  # the death names the session it ends

    dbirths = subscriber.on(f"{BASE}/DBIRTH/line4/vision")
    _, declared = metrics(dbirths[-1].payload)
    assert set(declared) >= {"verdicts/part_id", "verdicts/defective", "verdicts/label", "verdicts/score",
                             "verdicts/model/name", "verdicts/model/version", "graphrun/seq", "graphrun/id"}

    data = [metrics(m.payload) for m in subscriber.on(f"{BASE}/DDATA/line4/vision")]
    assert [v["verdicts/part_id"] for _, v in data] == [1, 2, 3]
    assert [v["verdicts/defective"] for _, v in data] == [False, True, False]
    assert [v["verdicts/score"] for _, v in data] == [0.1, 0.2, 0.3]
    assert [v["verdicts/model/version"] for _, v in data] == ["3"] * 3
    assert [v["graphrun/seq"] for _, v in data] == [1, 2, 3]
    types = {m.name: m.datatype for m in data[0][0].metrics}
    assert types["verdicts/part_id"] == 4 and types["verdicts/defective"] == 11  # Int64, Boolean
    assert types["verdicts/score"] == 10 and types["verdicts/label"] == 12  # Double, String
    # Sparkplug's seq: 0 at NBIRTH, then one more per message of the node, births included.
    node_messages = [m for m in subscriber.messages if "/NDEATH/" not in m.topic]
    assert [Payload.FromString(m.payload).seq for m in node_messages] == list(range(len(node_messages)))


def test_a_new_field_brings_a_new_birth_and_a_rebirth_command_is_answered(
    mosquitto: Mosquitto, graph_file: Callable[[str], Graph], start_agent, redis_client: redis.Redis,
) -> None:
    graph = graph_file(GRAPH.format(port=mosquitto.port, device=""))
    with Subscriber(mosquitto.port, f"{BASE}/#") as subscriber:
        start_agent(graph, "mqtt")
        write_messages(redis_client, "cls.verdicts", [verdict(1)])
        wait_until(lambda: subscriber.on(f"{BASE}/NDATA/line4"), what="the first NDATA")
        write_messages(redis_client, "cls.verdicts", [verdict(2, inference_ms=3.5)])
        wait_until(lambda: len(subscriber.on(f"{BASE}/NDATA/line4")) == 2, what="the second NDATA")
        births = len(subscriber.on(f"{BASE}/NBIRTH/line4"))

        command = Payload(timestamp=1)
        metric = command.metrics.add(name="Node Control/Rebirth", datatype=11)
        metric.boolean_value = True
        publish(mosquitto.port, f"{BASE}/NCMD/line4", [command.SerializeToString()])
        wait_until(lambda: len(subscriber.on(f"{BASE}/NBIRTH/line4")) == births + 1, what="the rebirth")

    nbirths = subscriber.on(f"{BASE}/NBIRTH/line4")
    _, before = metrics(nbirths[births - 1].payload)
    assert "verdicts/inference_ms" in before  # declared before the NDATA that first carries it
    _, again = metrics(nbirths[-1].payload)
    assert again["verdicts/part_id"] == 2 and again["verdicts/inference_ms"] == 3.5  # each metric's last value
    assert Payload.FromString(nbirths[-1].payload).seq == 0


def test_a_lost_link_makes_the_broker_send_the_death_certificate_and_the_next_session_is_born_again(
    mosquitto: Mosquitto, graph_file: Callable[[str], Graph], start_agent, redis_client: redis.Redis,
) -> None:
    gate = Gate(mosquitto.port)
    try:
        graph = graph_file(GRAPH.format(port=gate.port, device=""))
        with Subscriber(mosquitto.port, f"{BASE}/#") as subscriber:
            runner = start_agent(graph, "mqtt")
            wait_until(lambda: subscriber.on(f"{BASE}/NBIRTH/line4"), what="the first NBIRTH")
            gate.shut()  # the agent's TCP connection is cut: no DISCONNECT, so the broker sends the will
            wait_until(lambda: subscriber.on(f"{BASE}/NDEATH/line4"), what="the NDEATH from the will")
            write_messages(redis_client, "cls.verdicts", [verdict(1)])
            wait_until(lambda: runner.status.get("queued") == 1, what="the verdict to wait for the broker")
            gate.open()
            wait_until(lambda: subscriber.on(f"{BASE}/NDATA/line4"), what="the verdict published")
    finally:
        gate.close()
    _, first = metrics(subscriber.on(f"{BASE}/NBIRTH/line4")[0].payload)
    _, death = metrics(subscriber.on(f"{BASE}/NDEATH/line4")[0].payload)
    _, second = metrics(subscriber.on(f"{BASE}/NBIRTH/line4")[-1].payload)
    assert death["bdSeq"] == first["bdSeq"] and second["bdSeq"] == (first["bdSeq"] + 1) % 256
    topics = [m.topic.removeprefix(BASE + "/") for m in subscriber.messages]
    assert topics.index("NDATA/line4") > len(topics) - 1 - topics[::-1].index("NBIRTH/line4")


def test_metric_values_keep_their_type_and_sign() -> None:
    from graphrun_agents.mqtt.config import Sparkplug

    node = EdgeNode(Sparkplug(group_id="g", edge_node_id="n"))
    out = node.metrics("p", {"neg": -5, "big": 2**63 + 1, "none": None, "list": [1, 2]}, seq=7, message_id="x")
    values = {m.name: value_of(m) for m in out}
    assert values == {"p/neg": -5, "p/big": 2**63 + 1, "p/none": None, "p/list": "[1,2]", "graphrun/seq": 7,
                      "graphrun/id": "x"}
