"""The OPC UA agent's input side: subscribed nodes of a real asyncua server (the PLC
simulator) sent on the ``values`` port, so a PLC's part-present signal triggers cameras
through the graph; the subscription outlives an outage of the server."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import read_messages, wait_until
from graphrun.testing import AgentHarness
from graphrun_agents.modbus.simulator import free_port
from graphrun_agents.opcua.agent import OpcuaAgent
from graphrun_agents.opcua.params import OpcuaParams
from graphrun_agents.opcua.simulator import OpcuaPlcSim


def settings(url: str) -> dict[str, Any]:
    return {"url": url, "timeout": 0.5, "reconnect_min": 0.05, "reconnect_max": 0.2,
            "subscribe": {"part_present": {"node": "ns=2;s=PartPresent", "type": "Boolean", "rising": True},
                          "part_id": {"node": "ns=2;s=PartId", "type": "UInt32"}}}


@pytest.fixture
def url() -> str:
    return f"opc.tcp://127.0.0.1:{free_port()}/plc/"


@pytest.fixture
def plc(url: str) -> Iterator[OpcuaPlcSim]:
    sim = OpcuaPlcSim(OpcuaParams.model_validate(settings(url)))
    sim.start()
    yield sim
    sim.stop()


def collect(h: AgentHarness, port: str, until: Any, limit: float = 20.0) -> list[dict]:
    got: list[dict] = []
    end = time.monotonic() + limit
    while not until(got):
        if time.monotonic() > end:
            raise AssertionError(f"gave up waiting; got {got}")
        h.tick()
        got += h.take(port)
        time.sleep(0.01)
    return got


def test_each_change_of_a_subscribed_node_is_sent_with_the_server_s_timestamps(plc: OpcuaPlcSim, url: str) -> None:
    with AgentHarness(OpcuaAgent, params=settings(url)) as h:
        first = collect(h, "values", lambda got: any(v["name"] == "part_id" for v in got))
        assert [v["value"] for v in first if v["name"] == "part_id"] == [0]  # the current value, on subscribing
        plc.write("part_id", 41)
        plc.write("part_id", 42)
        changes = collect(h, "values", lambda got: [v.get("part_id") for v in got] == [41, 42])
    assert [c["node"] for c in changes] == ["ns=2;s=PartId"] * 2
    assert all(c["source_time"] and c["server_time"] for c in changes)
    sequences = [c["sequence"] for c in first + changes]
    assert sequences == list(range(1, len(sequences) + 1))  # numbered: a gap or a repeat shows


def test_a_rising_subscription_sends_only_the_changes_to_true(plc: OpcuaPlcSim, url: str) -> None:
    with AgentHarness(OpcuaAgent, params=settings(url)) as h:
        collect(h, "values", lambda got: any(v["name"] == "part_id" for v in got))  # subscribed
        for value in (True, False, True, False):
            plc.write("part_present", value)
            time.sleep(0.15)  # each value its own notification (the publishing interval is 0.05 s)
        edges = collect(h, "values", lambda got: len([v for v in got if v["name"] == "part_present"]) >= 2)
        time.sleep(0.3)
        h.tick()
        edges += h.take("values")
    assert [v["part_present"] for v in edges if v["name"] == "part_present"] == [True, True]


def test_the_subscription_comes_back_after_the_server_restarts(url: str) -> None:
    sim = OpcuaPlcSim(OpcuaParams.model_validate(settings(url)))
    sim.start()
    try:
        with AgentHarness(OpcuaAgent, params=settings(url)) as h:
            collect(h, "values", lambda got: any(v["name"] == "part_id" for v in got))
            sim.stop()
            collect(h, "values", lambda got: h.status.get("server") == "unreachable")
            sim = OpcuaPlcSim(OpcuaParams.model_validate(settings(url)))
            sim.start()
            collect(h, "values", lambda got: h.status.get("server") == "connected")
            sim.write("part_id", 7)
            after = collect(h, "values", lambda got: any(v.get("part_id") == 7 for v in got))
            assert [v["part_id"] for v in after if v["name"] == "part_id"][-1] == 7
    finally:
        sim.stop()


GRAPH = """
name: plc-triggered
redis: {{main: {{url: "{url}"}}}}
agents:
  plc:
    type: opcua
    params:
      url: {plc}
      subscribe:
        part_id: {{node: ns=2;s=PartId, type: UInt32}}
    outputs:
      values: main:plc.parts
  cam:
    type: camera
    params: {{source: synthetic, width: 64, height: 48}}
    inputs:
      trigger: main:plc.parts
"""


def test_a_plc_s_part_id_node_triggers_a_camera_through_the_graph(
    graph_file: Any, redis_server: Any, redis_client: Any, start_agent: Any, plc: OpcuaPlcSim, url: str
) -> None:
    graph = graph_file(GRAPH.format(url=redis_server.url, plc=url))  # the ports fit: validated here
    start_agent(graph, "plc")
    wait_until(lambda: read_messages(redis_client, "plc.parts"), what="the subscription's first value")
    plc.write("part_id", 1001)
    wait_until(lambda: any(m["part_id"] == 1001 for m in read_messages(redis_client, "plc.parts")),
               what="part 1001 on the camera's trigger stream")
    (message,) = [m for m in read_messages(redis_client, "plc.parts") if m["part_id"] == 1001]
    assert message["node"] == "ns=2;s=PartId" and message["value"] == 1001


def test_a_date_time_node_s_value_travels_as_seconds_since_the_epoch(url: str) -> None:
    params = {"url": url, "subscribe": {"changed_at": {"node": "ns=2;s=Recipe.ChangedAt", "type": "DateTime"}}}
    sim = OpcuaPlcSim(OpcuaParams.model_validate(params))
    sim.start()
    try:
        with AgentHarness(OpcuaAgent, params=params) as h:
            collect(h, "values", lambda got: len(got) >= 1)
            sim.write("changed_at", 1_700_000_000.5)
            changes = collect(h, "values", lambda got: any(v["value"] == 1_700_000_000.5 for v in got))
    finally:
        sim.stop()
    assert changes[-1]["changed_at"] == 1_700_000_000.5
