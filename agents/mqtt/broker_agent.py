"""A mosquitto broker as an agent of a graph, so a demo graph runs whole without a plant broker.

    broker:
      type: mqtt.broker
      params: {port: 1884}            # the mqtt agent's host and port

It has no ports: it runs a local mosquitto (``broker.Mosquitto``: anonymous clients,
persistence off) for the life of the agent, and says in its health record where it
listens. The mqtt agent waits for it, so the two start in any order.
"""

from __future__ import annotations

import dataclasses

from pydantic import BaseModel, ConfigDict, Field

from graphrun import Agent, Deployment

from .broker import Mosquitto


class BrokerParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    host: str = Field("127.0.0.1", description="address to listen on")
    port: int = Field(1884, ge=1, le=65535)


class BrokerAgent(Agent):
    """Runs a Mosquitto for the life of the agent; a broker that exits is restarted."""

    Params = BrokerParams
    params: BrokerParams

    @classmethod
    def deployment(cls, params: BrokerParams) -> Deployment:
        return dataclasses.replace(super().deployment(params), notes=(
            "mqtt.broker runs mosquitto, which the graphrun image does not contain: a demo broker, "
            "not for a line (point the mqtt agent at the plant's broker)",))

    def start(self) -> None:
        self._broker = Mosquitto(host=self.params.host, port=self.params.port)
        self._broker.start()
        self.status.update(listening=f"{self.params.host}:{self.params.port}", restarts=0)

    def produce(self) -> None:
        if self.wait(0.5) or self._broker.running:
            return
        self.log.error("mosquitto exited; starting it again (its log: %s)", self._broker.log)
        self.status["restarts"] += 1
        self._broker.start()

    def stop(self) -> None:
        if hasattr(self, "_broker"):
            self._broker.close()
