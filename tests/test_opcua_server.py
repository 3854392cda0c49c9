"""The OPC UA agent in server mode: the line's live state as an address space, read,
browsed and subscribed to by a real asyncua client, as a SCADA would."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest
from asyncua import Client, ua
from graphrun.testing import AgentHarness
from graphrun_agents.modbus.simulator import free_port
from graphrun_agents.opcua.agent import OpcuaAgent

NAMESPACE = "urn:graphrun:test-line"


def verdict(part_id: int, view: str, defective: bool = False, label: str = "ok", version: str = "3") -> dict:
    return {"part_id": part_id, "camera": view, "defective": defective, "label": label, "score": 0.8 if defective else 0.1,
            "threshold": 0.5, "model": "m", "model_version": version, "backend": "onnxruntime",
            "preprocess_ms": 1.0, "inference_ms": 1.0}


@pytest.fixture
def server() -> Iterator[tuple[AgentHarness, str]]:
    url = f"opc.tcp://127.0.0.1:{free_port()}/line/"
    params = {"mode": "server", "url": url, "namespace": NAMESPACE, "join_timeout": 0.2}
    with AgentHarness(OpcuaAgent, params=params, groups={"verdicts": ["front", "back"]}) as h:
        yield h, url


async def read(url: str, paths: list[str]) -> dict[str, Any]:
    async with Client(url, timeout=5) as client:
        idx = await client.get_namespace_index(NAMESPACE)
        values = await client.read_values([client.get_node(ua.NodeId(f"Line.{p}", idx)) for p in paths])
        return dict(zip(paths, values))


def test_the_last_result_counters_reject_rate_and_model_version_are_readable(server: tuple[AgentHarness, str]) -> None:
    h, url = server
    for part_id, bad in ((1, False), (2, True), (3, False), (4, False)):
        h.send("front", verdict(part_id, "front", version="3"))
        h.send("back", verdict(part_id, "back", bad, "chip" if bad else "ok", version="4"))
    h.send("front", verdict(5, "front"))  # its back view never comes: incomplete
    end = time.monotonic() + 10
    while h.held and time.monotonic() < end:
        time.sleep(0.05)
        h.tick()
    assert not h.held  # every verdict acknowledged once its part is in the address space

    state = asyncio.run(read(url, [
        "LastResult.PartId", "LastResult.Outcome", "LastResult.Missing", "LastResult.Sequence",
        "Counters.Total", "Counters.Ok", "Counters.Defective", "Counters.Incomplete", "RejectRate",
        "Views.back.PartId", "Views.back.Label", "Views.front.ModelVersion", "ModelVersion", "Health.State",
    ]))
    assert state == {
        "LastResult.PartId": 5, "LastResult.Outcome": "incomplete", "LastResult.Missing": "back",
        "LastResult.Sequence": 5, "Counters.Total": 5, "Counters.Ok": 3, "Counters.Defective": 1,
        "Counters.Incomplete": 1, "RejectRate": pytest.approx(0.4), "Views.back.PartId": 4, "Views.back.Label": "ok",
        "Views.front.ModelVersion": "3", "ModelVersion": "3", "Health.State": "running",
    }


def test_a_scada_can_browse_the_line_and_subscribe_to_the_last_result(server: tuple[AgentHarness, str]) -> None:
    h, url = server

    class Changes:
        def __init__(self) -> None:
            self.values: list[Any] = []

        def datachange_notification(self, node: Any, val: Any, data: Any) -> None:
            self.values.append(val)

    async def scada() -> tuple[list[str], list[Any], bool]:
        async with Client(url, timeout=5) as client:
            idx = await client.get_namespace_index(NAMESPACE)
            line = await client.nodes.objects.get_child([f"{idx}:Line"])
            names = sorted([(await child.read_browse_name()).Name for child in await line.get_children()])
            changes = Changes()
            subscription = await client.create_subscription(50, changes)
            await subscription.subscribe_data_change(client.get_node(ua.NodeId("Line.LastResult.PartId", idx)))
            await asyncio.sleep(0.3)
            await asyncio.get_running_loop().run_in_executor(None, send_parts)
            end = time.monotonic() + 10
            while len(changes.values) < 3 and time.monotonic() < end:
                await asyncio.sleep(0.05)
            try:
                await client.write_values([client.get_node(ua.NodeId("Line.RejectRate", idx))], [0.5])
                writable = True
            except ua.UaStatusCodeError:
                writable = False
            return names, changes.values, writable

    def send_parts() -> None:
        for part_id in (11, 12):
            for view in ("front", "back"):
                h.send(view, verdict(part_id, view))

    names, values, writable = asyncio.run(scada())
    assert names == ["Counters", "Health", "LastResult", "ModelVersion", "RejectRate", "Views"]
    assert values == [0, 11, 12]  # the value on subscribing, then each part
    assert not writable  # the line's state is read-only for clients


HEALTH_GRAPH = """
name: opcua-health
redis: {{main: {{url: "{url}"}}}}
agents:
  counter:
    type: examples.counter
    params: {{rate: 5}}
  line:
    type: opcua
    params: {{mode: server, url: "{opcua}", namespace: {namespace}, health_interval: 0.2}}
    inputs:
      front: main:verdicts.front
"""


def test_each_agent_s_health_in_the_graph_is_a_node(graph_file: Any, redis_server: Any) -> None:
    from graphrun.testing import running

    url = f"opc.tcp://127.0.0.1:{free_port()}/line/"
    graph = graph_file(HEALTH_GRAPH.format(url=redis_server.url, opcua=url, namespace=NAMESPACE))

    async def health() -> Any:
        async with Client(url, timeout=5) as client:
            idx = await client.get_namespace_index(NAMESPACE)
            try:
                return await client.get_node(ua.NodeId("Line.Health.Agents.counter", idx)).read_value()
            except ua.UaStatusCodeError:
                return None  # not made yet: the first heartbeats are still to come

    with running(graph, redis_urls={"main": redis_server.url}):
        end = time.monotonic() + 30
        while (state := asyncio.run(health())) != "running" and time.monotonic() < end:
            time.sleep(0.2)
    assert state == "running"


def test_a_server_on_every_address_has_its_port_published_and_a_local_client_the_host_network() -> None:
    from graphrun_agents.opcua.params import OpcuaParams

    server = OpcuaAgent.deployment(OpcuaParams(mode="server", url="opc.tcp://0.0.0.0:4840/graphrun/"))
    client = OpcuaAgent.deployment(OpcuaParams(url="opc.tcp://127.0.0.1:4841/plc/"))
    assert server.ports == (4840,) and not server.host_network
    assert client.host_network and not client.ports
