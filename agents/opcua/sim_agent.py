"""The OPC UA PLC simulator as an agent of a graph, so a demo graph runs whole without a PLC.

    plc_opcua_sim:
      type: opcua.plc_sim
      params: {url: opc.tcp://127.0.0.1:4841/plc/, nodes: *plc_nodes, handshake: ..., pulse: 0.25}

Its params are the opcua agent's (a YAML anchor shares them), plus ``pulse`` and
``take_results``. It has no ports: it listens for OPC UA and logs each result at INFO
(``quiet``: counts them only). Its health record counts the results received.
"""

from __future__ import annotations

from graphrun import Agent
from pydantic import Field

from .agent import OpcuaAgent
from .params import OpcuaParams
from .simulator import OpcuaPlcSim, SimResult


class OpcuaPlcSimParams(OpcuaParams):
    pulse: float | None = Field(None, gt=0, description="seconds between part-present signals on the subscribed nodes")
    take_results: bool = Field(True, description="echo each sequence in the handshake node, as a PLC program would")
    quiet: bool = Field(False, description="count results without logging them")


class OpcuaPlcSimAgent(Agent):
    """Runs an OpcuaPlcSim for the life of the agent."""

    Params = OpcuaPlcSimParams
    params: OpcuaPlcSimParams
    deployment = OpcuaAgent.deployment  # the network of its url, as the agent's

    def start(self) -> None:
        p = self.params
        self._sim = OpcuaPlcSim(p, take_results=p.take_results, pulse=p.pulse, on_result=self._received)
        self._sim.start()
        self.status.update(listening=p.url, results=0)

    def produce(self) -> None:
        self.wait(0.5)  # the server works in its own thread

    def stop(self) -> None:
        if hasattr(self, "_sim"):
            self._sim.stop()

    def _received(self, result: SimResult) -> None:
        self.status["results"] = len(self._sim.results)
        if not self.params.quiet:
            self.log.info("result %s", result.as_json())
