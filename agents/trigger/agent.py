"""The trigger source: one ``{part_id}`` message per part passing the cameras.

It stands in for the machine's part-present signal (a PLC output or a light barrier)
and is the single place where part ids are made: every camera reads its ``parts``
stream in its own consumer group and takes the id from it, so the front and back
views of one part carry one id, also after one camera restarts (it resumes at its
group's place in the stream, where the other camera has been all along). The next id
is kept in the home Redis (``graphrun_agents.part_ids``), so ids continue after a
restart of this agent or of the whole graph and never name two parts.
"""

from __future__ import annotations

import time
from typing import TypedDict

from pydantic import BaseModel, ConfigDict, Field

from graphrun import Agent, Output, Pacer, RedisAccess
from graphrun_agents.part_ids import PartIds, part_ids_access

#: Default bound of a ``parts`` stream: tiny messages, and a camera behind by more than
#: this many parts has missed them anyway.
PARTS_MAXLEN = 1000


class PartPresent(TypedDict):
    """One part at the cameras: its id, and when the part-present event happened."""

    part_id: int
    timestamp: float  # seconds since the epoch


class TriggerParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rate: float = Field(gt=0, description="parts per second (the line's cycle rate)")
    count: int | None = Field(None, ge=0, description="stop after this many parts")
    part_id_start: int = Field(1, ge=0, description="the first part id, when no id was given before")


class TriggerAgent(Agent):
    """Sends one part-present event per part, at ``rate``, each with a new part id."""

    parts = Output(PartPresent, maxlen=PARTS_MAXLEN, doc="one message per part: the part id cameras label frames with")

    Params = TriggerParams
    params: TriggerParams

    @classmethod
    def redis_access(cls, params: TriggerParams, *, graph: str, agent: str, home: str) -> RedisAccess:
        """Its next part id, kept on its home Redis."""
        return RedisAccess(grants=(part_ids_access(graph, agent, home),))

    def start(self) -> None:
        self._ids = PartIds.of(self, self.params.part_id_start)
        self._pace = Pacer(self.params.rate)
        self._sent = 0
        self.status.update(state="running", parts=0, next_part_id=self._ids.next)

    def produce(self) -> None:
        if self.params.count is not None and self._sent >= self.params.count:
            self.status["state"] = "finished"
            self.wait(0.5)
            return
        if not self._pace.wait(self.wait):
            return
        part_id = self._ids.take()  # saved before the message is sent: a crash skips an id, never repeats one
        self.parts.send({"part_id": part_id, "timestamp": time.time()})
        self._sent += 1
        self.status.update(parts=self._sent, last_part_id=part_id, next_part_id=self._ids.next)
