"""`graphrun plc-sim` as a user runs it: a separate process that prints each result it receives."""

from __future__ import annotations

import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from graphrun.testing import AgentHarness
from graphrun_agents.modbus.agent import ModbusAgent
from graphrun_agents.modbus.simulator import free_port

GRAPH = """
name: plc-sim-cli
agents:
  plc:
    type: modbus
    params:
      host: 127.0.0.1
      port: {port}
      unit: 3
      map:
        sequence: {{address: 10}}
        part_id: {{address: 11, encoding: uint16}}
        outcome: null
        defective: {{table: coil, address: 4, encoding: bool}}
    inputs:
      front: main:verdicts.front
"""


class Sim:
    """A running `graphrun plc-sim` process and the lines it has printed."""

    def __init__(self, *args: str):
        self.process = subprocess.Popen(
            [sys.executable, "-m", "graphrun", "plc-sim", *args],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line.rstrip("\n"))

    def next_line(self) -> str:
        return self.lines.get(timeout=20)

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        return self.process.wait(10)


@pytest.fixture
def sims() -> Iterator[list[Sim]]:
    started: list[Sim] = []
    yield started
    for sim in started:
        sim.stop()


def verdict(part_id: int, defective: bool) -> dict:
    return {"part_id": part_id, "camera": "front", "defective": defective, "label": "chip", "score": 0.8,
            "threshold": 0.5, "model": "m", "model_version": "1", "backend": "onnxruntime",
            "preprocess_ms": 1.0, "inference_ms": 1.0}


def test_plc_sim_prints_each_result_it_receives(sims: list[Sim]) -> None:
    port = free_port()
    sim = Sim("--port", str(port))
    sims.append(sim)
    assert sim.next_line().startswith(f"PLC simulator on 127.0.0.1:{port}, unit 1: part_id = holding 101-102")
    params = {"host": "127.0.0.1", "port": port}
    with AgentHarness(ModbusAgent, params=params, groups={"verdicts": ["front"]}) as h:
        h.send("front", verdict(77, False))
        h.send("front", verdict(78, True))
    assert sim.next_line() == "result 1: part 77, ok"
    assert sim.next_line() == "result 2: part 78, defective"
    assert sim.stop() == 0


def test_plc_sim_takes_map_unit_and_port_from_the_graph(sims: list[Sim], tmp_path: Path) -> None:
    port = free_port()
    graph = tmp_path / "plant.yaml"
    graph.write_text(GRAPH.format(port=port))
    sim = Sim("--graph", str(graph), "--agent", "plc")
    sims.append(sim)
    assert sim.next_line().startswith(f"PLC simulator on 127.0.0.1:{port}, unit 3: part_id = holding 11 uint16")
    with AgentHarness(ModbusAgent, params={"host": "127.0.0.1", "port": port, "unit": 3,
                                           "map": {"sequence": {"address": 10},
                                                   "part_id": {"address": 11, "encoding": "uint16"},
                                                   "outcome": None,
                                                   "defective": {"table": "coil", "address": 4,
                                                                 "encoding": "bool"}}},
                      groups={"verdicts": ["front"]}) as h:
        h.send("front", verdict(5, True))
    assert sim.next_line() == "result 1: part 5, reject"


def test_plc_sim_refuses_a_graph_agent_that_is_not_modbus(sims: list[Sim], tmp_path: Path) -> None:
    graph = tmp_path / "plant.yaml"
    graph.write_text(GRAPH.format(port=free_port()))
    sim = Sim("--graph", str(graph), "--agent", "camera")
    sims.append(sim)
    assert "has no agent 'camera' (agents: plc)" in sim.next_line()
    assert sim.process.wait(10) == 2
