"""The OPC UA agent (``type: opcua``): the line's results to OPC UA, and OPC UA to the line.

``mode: client`` writes each part's result to nodes of a PLC's or SCADA's OPC UA
server (see ``client``) and sends changes of subscribed nodes on ``values`` (a PLC's
part-present signal, to trigger cameras through the graph). ``mode: server`` exposes
the line's live state as an address space (see ``space``). Both join each part's
verdicts as the Modbus agent does, with ``graphrun_agents.part_join``.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, TypedDict
from urllib.parse import urlsplit

from graphrun import Agent, Deployment, Inputs, Message, Output, ParamError
from typing_extensions import NotRequired

from ..messages import Verdict
from .client import ClientMode
from .params import OpcuaParams
from .space import ServerMode


class OpcuaResult(TypedDict):
    """What the client mode wrote for one part, once the server accepted it."""

    part_id: int
    outcome: str  # "ok", "defective" or "incomplete"
    label: str
    score: float
    sequence: int  # the value written to the sequence node, last
    nodes: dict[str, str]  # field -> node id written
    missing: list[str]  # views with no verdict (an incomplete part)
    verdicts: list[str]  # the verdicts joined, as "stream entry-id"
    time: float  # when the server accepted the sequence write, seconds since the epoch


class NodeChange(TypedDict):
    """One change of a subscribed node; the value is also under the subscription's name."""

    name: str
    node: str
    value: Any
    source_time: float | None  # the server's timestamps: the same change delivered twice has the same
    server_time: float | None
    sequence: int  # changes sent by this agent since it started
    timestamp: float  # when the agent received it, seconds since the epoch
    part_id: NotRequired[int]  # a subscription named part_id: the value, so it can trigger a camera


class OpcuaAgent(Agent):
    """OPC UA client (results out, subscriptions in) or server (the line's state)."""

    verdicts = Inputs(Verdict, doc="one input per camera view; the join waits for all that are connected")
    results = Output(OpcuaResult, maxlen=100_000, doc="client mode: what was written for each part, once the "
                     "server accepted it: the audit trail's last step (graphrun trace)")
    values = Output(NodeChange, maxlen=10_000, doc="client mode: each change of a subscribed node")

    Params = OpcuaParams
    params: OpcuaParams
    tick_interval = 0.05

    @classmethod
    def deployment(cls, params: Any) -> Deployment:
        """The network of ``url``'s host and port, as for agents with ``host`` and ``port``: a
        client of this machine's server shares the host's network, a server listening on
        every address has its port published."""
        url = urlsplit(params.url)
        return super().deployment(SimpleNamespace(host=url.hostname or "", port=url.port or 4840))

    @classmethod
    def check_wiring(cls, params: OpcuaParams, inputs: frozenset[str], outputs: frozenset[str]) -> list[ParamError]:
        """What each mode needs of the graph's wiring: verdict inputs need result nodes to go
        to (client) or are the whole point (server); a client needs inputs or subscriptions."""
        if params.mode == "server":
            return [] if inputs else [ParamError(("mode",), "mode server shows the line's verdicts: connect at least "
                                                            "one verdict input")]
        if inputs and not params.nodes.entries():
            return [ParamError(("nodes",), f"verdict inputs ({', '.join(sorted(inputs))}) but no result nodes: "
                                           "map at least nodes.sequence")]
        if not inputs and not params.subscribe:
            return [ParamError(("subscribe",), "a client with nothing to do: connect verdict inputs (with nodes) "
                                               "or subscribe to nodes")]
        return []

    def start(self) -> None:
        problems = self.check_wiring(self.params, frozenset(self.verdicts), frozenset())
        if problems:
            raise problems[0]  # the graph's check, again: a run without a graph file (AgentHarness) gets it too
        views = tuple(self.verdicts)
        self._mode: ClientMode | ServerMode = (ServerMode if self.params.mode == "server" else ClientMode)(self, views)
        try:
            self._mode.start()
        except BaseException:
            self._mode.stop()
            raise

    def stop(self) -> None:
        if hasattr(self, "_mode"):
            self._mode.stop()

    def handle(self, msg: Message) -> None:
        self._mode.handle(msg)

    def tick(self) -> None:
        self._mode.tick()

    def produce(self) -> None:
        """No verdict input is connected (subscriptions only): the work is the tick's."""
        self.wait(self.tick_interval)
