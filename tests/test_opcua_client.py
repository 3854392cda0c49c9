"""The OPC UA agent in client mode against a real asyncua server (the OPC UA PLC
simulator, in this process): what it writes, when it acknowledges, the handshake, and
wrong node ids reported with the graph file's line."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import line_of
from graphrun import AgentStartError, GraphError
from graphrun.testing import AgentHarness
from graphrun_agents.modbus.simulator import free_port
from graphrun_agents.opcua.agent import OpcuaAgent
from graphrun_agents.opcua.params import OpcuaParams
from graphrun_agents.opcua.simulator import OpcuaPlcSim

NODES = {
    "sequence": "ns=2;s=Result.Sequence",
    "part_id": "ns=2;s=Result.PartId",
    "outcome": "ns=2;s=Result.Outcome",
    "defective": "ns=2;s=Result.Rejected",
    "label": "ns=2;s=Result.Label",
    "code": "ns=2;s=Result.Code",
    "score": {"node": "ns=2;s=Result.Score", "type": "Float"},
    "missing": "ns=2;s=Result.Missing",
}


def verdict(part_id: int, view: str, defective: bool = False, label: str = "ok", score: float = 0.1) -> dict:
    return {"part_id": part_id, "camera": view, "defective": defective, "label": label, "score": score,
            "threshold": 0.5, "model": "m", "model_version": "7", "backend": "onnxruntime",
            "preprocess_ms": 1.0, "inference_ms": 1.0}


def params(url: str, **extra: Any) -> dict[str, Any]:
    return {"url": url, "nodes": NODES, "codes": {"scratch": 3}, "join_timeout": 0.3, "timeout": 1.0, **extra}


def wait_for(condition: Any, what: str, limit: float = 30.0, tick: AgentHarness | None = None) -> None:
    end = time.monotonic() + limit
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"gave up waiting for {what}")
        if tick is not None:
            tick.tick()
        time.sleep(0.01)


@pytest.fixture
def url() -> str:
    return f"opc.tcp://127.0.0.1:{free_port()}/plc/"


@pytest.fixture
def plc(url: str) -> Iterator[OpcuaPlcSim]:
    sim = OpcuaPlcSim(OpcuaParams.model_validate(params(url, handshake={"node": "ns=2;s=Result.Taken"})))
    sim.start()
    yield sim
    sim.stop()


def test_each_part_s_joined_result_reaches_the_mapped_nodes_with_a_sequence_written_last(
    plc: OpcuaPlcSim, url: str
) -> None:
    with AgentHarness(OpcuaAgent, params=params(url), groups={"verdicts": ["front", "back"]}) as h:
        h.send("front", verdict(1, "front"))
        h.send("back", verdict(1, "back"))
        h.send("front", verdict(2, "front", score=0.3))
        h.send("back", verdict(2, "back", True, "scratch", 0.9))
        h.send("front", verdict(3, "front"))  # its back view never comes
        wait_for(lambda: len(plc.results) == 3, "three results", tick=h)
        results = h.take("results")

    assert [r.sequence for r in plc.results] == [1, 2, 3]
    first, second, third = (r.values for r in plc.results)
    assert first == {"part_id": 1, "outcome": 0, "defective": False, "label": "ok", "code": 0,
                     "score": pytest.approx(0.1), "missing": ""}
    assert second == {"part_id": 2, "outcome": 1, "defective": True, "label": "scratch", "code": 3,
                      "score": pytest.approx(0.9), "missing": ""}
    assert third["part_id"] == 3 and third["outcome"] == 2 and third["missing"] == "back"
    assert [(r["part_id"], r["outcome"], r["sequence"]) for r in results] == [
        (1, "ok", 1), (2, "defective", 2), (3, "incomplete", 3)]
    assert results[0]["nodes"]["sequence"] == NODES["sequence"]


def test_a_verdict_is_acknowledged_only_once_its_part_is_on_the_server(plc: OpcuaPlcSim, url: str) -> None:
    with AgentHarness(OpcuaAgent, params=params(url, join_timeout=60), groups={"verdicts": ["front", "back"]}) as h:
        front = h.send("front", verdict(5, "front"))
        assert h.held == [front] and not plc.results  # the part waits for its back view
        back = h.send("back", verdict(5, "back"))
        assert h.released == [front, back] and not h.held
        assert plc.read("part_id") == 5 and plc.read("sequence") == 1
        # The same verdict delivered again after its part was written: acknowledged, not written twice.
        again = h.send("back", verdict(5, "back"))
        assert again not in h.held and plc.read("sequence") == 1 and len(plc.results) == 1


def test_the_counter_continues_from_the_server_and_the_part_it_shows_is_not_written_again(
    plc: OpcuaPlcSim, url: str
) -> None:
    with AgentHarness(OpcuaAgent, params=params(url), groups={"verdicts": ["front", "back"]}) as h:
        for view in ("front", "back"):
            h.send(view, verdict(8, view))
    # A successor (after a crash) receives part 8's verdicts again, then part 9's.
    with AgentHarness(OpcuaAgent, params=params(url), groups={"verdicts": ["front", "back"]}) as h:
        for part_id in (8, 9):
            for view in ("front", "back"):
                h.send(view, verdict(part_id, view))
        assert not h.held
    assert [(r.sequence, r.values["part_id"]) for r in plc.results] == [(1, 8), (2, 9)]


def test_with_a_handshake_node_the_next_result_waits_until_the_plc_took_the_last(url: str) -> None:
    settings = params(url, handshake={"node": "ns=2;s=Result.Taken", "timeout": 0.2})
    sim = OpcuaPlcSim(OpcuaParams.model_validate(settings), take_results=False)
    sim.start()
    try:
        with AgentHarness(OpcuaAgent, params=settings, groups={"verdicts": ["front", "back"]}) as h:
            for part_id in (1, 2):
                for view in ("front", "back"):
                    h.send(view, verdict(part_id, view))
            for _ in range(10):
                h.tick()
            assert [r.values["part_id"] for r in sim.results] == [1]
            assert h.status["server"] == "result not taken" and len(h.held) == 2  # part 2's verdicts
            sim.write("handshake", 1)  # the PLC program took result 1
            wait_for(lambda: len(sim.results) == 2, "the second result", tick=h)
            assert not h.held
    finally:
        sim.stop()


def test_a_result_that_does_not_fit_its_node_s_type_is_refused_at_once(plc: OpcuaPlcSim, url: str) -> None:
    from graphrun import DeadLetter

    settings = params(url)
    settings["nodes"] = {**NODES, "part_id": {"node": "ns=2;s=Result.PartId", "type": "UInt64"},
                         "sequence": {"node": "ns=2;s=Result.Sequence", "type": "UInt32"}}
    with AgentHarness(OpcuaAgent, params=settings, groups={"verdicts": ["front", "back"]}) as h, \
            pytest.raises(DeadLetter, match="part_id -1 does not fit the node's type UInt64"):
        h.send("front", verdict(-1, "front"))


def test_a_malformed_node_id_is_reported_with_the_graph_file_s_line(graph_file: Any, url: str) -> None:
    text = GRAPH.format(url="redis://127.0.0.1:1", plc=url, part_id="ns=2;x=Result.PartId")
    with pytest.raises(GraphError) as caught:
        graph_file(text)
    (problem,) = caught.value.problems
    assert problem.line == line_of(text, "x=Result.PartId")
    assert "not an OPC UA node id" in problem.message and problem.path.endswith("nodes.part_id.node")


GRAPH = """\
name: opcua-start
redis: {{main: {{url: "{url}"}}}}
agents:
  plc:
    type: opcua
    params:
      url: {plc}
      timeout: 1.0
      nodes:
        sequence: ns=2;s=Result.Sequence
        part_id: {part_id}
    inputs:
      front: main:verdicts.front
"""


def test_a_node_the_server_lacks_fails_the_start_naming_the_graph_file_s_line(
    graph_file: Any, redis_server: Any, plc: OpcuaPlcSim, url: str
) -> None:
    from graphrun.testing import running

    text = GRAPH.format(url=redis_server.url, plc=url, part_id="ns=2;s=Result.PartNumber")
    graph = graph_file(text, "line.yaml")
    with pytest.raises(AgentStartError) as caught, running(graph, redis_urls={"main": redis_server.url}):
        pass
    message = str(caught.value)
    assert message.startswith(f"{graph.file}:{line_of(text, 'PartNumber')}:")
    assert "ns=2;s=Result.PartNumber" in message and "BadNodeIdUnknown" in message
    assert "agents.plc.params.nodes.part_id.node" in message


def test_a_node_of_another_type_than_the_graph_says_fails_the_start(
    graph_file: Any, redis_server: Any, plc: OpcuaPlcSim, url: str
) -> None:
    from graphrun.testing import running

    text = GRAPH.format(url=redis_server.url, plc=url, part_id="{node: ns=2;s=Result.PartId, type: Int16}")
    graph = graph_file(text)
    with pytest.raises(AgentStartError, match=r"has data type UInt64, not Int16 \(agents.plc.params.nodes.part_id.type\)"), \
            running(graph, redis_urls={"main": redis_server.url}):
        pass


def test_a_node_the_server_lacks_when_it_comes_up_after_the_agent_names_the_graph_file_s_line(
    graph_file: Any, redis_server: Any, url: str
) -> None:
    from graphrun.testing import running

    text = GRAPH.format(url=redis_server.url, plc=url, part_id="ns=2;s=Result.PartNumber")
    graph = graph_file(text, "late.yaml")
    with pytest.raises(AgentStartError) as caught, running(graph, redis_urls={"main": redis_server.url}) as runners:
        runner = runners["plc"]
        assert runner.status["server"] == "waiting for server"
        sim = OpcuaPlcSim(OpcuaParams.model_validate(params(url)))  # has Result.PartId, not PartNumber
        sim.start()
        try:
            wait_for(runner.stopping.is_set, "the agent to stop on the missing node")
        finally:
            sim.stop()
    assert str(caught.value).startswith(f"{graph.file}:{line_of(text, 'PartNumber')}:")
    assert "BadNodeIdUnknown" in str(caught.value)
