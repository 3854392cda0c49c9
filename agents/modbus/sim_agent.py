"""The PLC simulator as an agent of a graph, so a demo graph runs whole without a PLC.

    plc_sim:
      type: graphrun_agents.modbus.sim_agent:PlcSimAgent
      params: {port: 5020}            # same map, port and unit as the modbus agent

It has no ports: it listens for Modbus TCP and logs each result at INFO (as
``graphrun plc-sim`` prints them; the agent's log level, or ``quiet``, silences them).
Its health record counts the results received.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from graphrun import Agent

from .regmap import RegisterMap
from .simulator import PlcResult, PlcSimulator


class PlcSimParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    host: str = Field("127.0.0.1", description="address to listen on")
    port: int = Field(5020, ge=1, le=65535)
    unit: int = Field(1, ge=0, le=255)
    map: RegisterMap = Field(default_factory=RegisterMap, description="the modbus agent's map")
    take_results: bool = Field(True, description="echo each counter in result_read, as a PLC program would")
    quiet: bool = Field(False, description="count results without logging them")


class PlcSimAgent(Agent):
    """Runs a PlcSimulator for the life of the agent."""

    Params = PlcSimParams
    params: PlcSimParams

    def start(self) -> None:
        p = self.params
        self._sim = PlcSimulator(p.map, host=p.host, port=p.port, unit=p.unit, take_results=p.take_results,
                                 on_result=self._received)
        self._sim.start()
        self.status.update(listening=f"{p.host}:{p.port}", results=0)

    def produce(self) -> None:
        self.wait(0.5)  # the server works in its own thread

    def stop(self) -> None:
        if hasattr(self, "_sim"):
            self._sim.stop()

    def _received(self, result: PlcResult) -> None:
        self.status["results"] = len(self._sim.results)
        if not self.params.quiet:
            self.log.info("%s", result.describe(self.params.map))
