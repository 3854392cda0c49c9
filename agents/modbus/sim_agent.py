"""The PLC simulator as an agent of a graph, so a demo graph runs whole without a PLC.

    plc_sim:
      type: graphrun_agents.modbus.sim_agent:PlcSimAgent
      params: {port: 5020}            # same map, port and unit as the modbus agent

It has no ports: it listens for Modbus TCP. A result a second would bury every other
line of a run's log: each result is logged at DEBUG (``log_level: DEBUG`` on the agent
shows them, as ``graphrun plc-sim`` prints them), and every ``summary_interval`` seconds
one INFO line says how many results came in meanwhile, by outcome (``quiet`` silences it).
Its health record counts the results received, in all and by outcome.
"""

from __future__ import annotations

import threading
import time
from collections import Counter

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
    summary_interval: float = Field(30.0, gt=0, description="seconds between the INFO lines that count the results")


class PlcSimAgent(Agent):
    """Runs a PlcSimulator for the life of the agent."""

    Params = PlcSimParams
    params: PlcSimParams

    def start(self) -> None:
        p = self.params
        self._lock = threading.Lock()  # results arrive on the server's thread
        self._since: Counter[str] = Counter()  # outcomes since the last summary line
        self._outcomes: Counter[str] = Counter()  # outcomes in all
        self._next_summary = time.monotonic() + p.summary_interval
        self._sim = PlcSimulator(p.map, host=p.host, port=p.port, unit=p.unit, take_results=p.take_results,
                                 on_result=self._received)
        self._sim.start()
        self.status.update(listening=f"{p.host}:{p.port}", results=0, outcomes={})

    def produce(self) -> None:
        self.wait(0.5)  # the server works in its own thread
        if time.monotonic() >= self._next_summary:
            self._next_summary = time.monotonic() + self.params.summary_interval
            self._summarise()

    def _summarise(self) -> None:
        with self._lock:
            since, self._since = self._since, Counter()
            total = len(self._sim.results)
        if since and not self.params.quiet:
            counted = ", ".join(f"{n} {outcome}" for outcome, n in sorted(since.items()))
            self.log.info("%d result(s) in the last %g s (%s); %d in all", sum(since.values()),
                          self.params.summary_interval, counted, total)

    def stop(self) -> None:
        if hasattr(self, "_sim"):
            self._sim.stop()
            self._summarise()

    def _received(self, result: PlcResult) -> None:
        outcome = result.outcome_name(self.params.map)
        with self._lock:
            self._since[outcome] += 1
            self._outcomes[outcome] += 1
            self.status["results"] = len(self._sim.results)
            self.status["outcomes"] = dict(self._outcomes)
        if not self.params.quiet:
            self.log.debug("%s", result.describe(self.params.map))
