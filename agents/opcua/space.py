"""Server mode: the line's live state as an OPC UA address space a SCADA browses and subscribes to.

Under ``Objects/Line`` (namespace ``namespace``, string node ids ``Line.<path>``):

- ``LastResult``: PartId, Outcome, Label, Score, Sequence, Missing, Time: the last part closed;
- ``Views/<view>``: PartId, Defective, Label, Score, ModelVersion: each view's last verdict;
- ``Counters``: Total, Ok, Defective, Incomplete; ``RejectRate`` (not ok / total);
- ``ModelVersion``: the model version of the last verdict;
- ``Health``: State (this agent) and ``Agents/<agent>``: each graph agent's state.

Every value is read-only for clients. Verdicts are acknowledged once their part's
state is in the address space; the counters count from the agent's start.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import TYPE_CHECKING, Any

from asyncua import Server, ua
from graphrun import DeadLetter, GraphHealth, Message

from ..part_join import Join, Outcome, Part
from .loop import LoopThread
from .params import OpcuaParams
from .security import credentials, new_server, secure_server

if TYPE_CHECKING:
    from .agent import OpcuaAgent

_TYPES = {bool: ua.VariantType.Boolean, int: ua.VariantType.UInt64, float: ua.VariantType.Double,
          str: ua.VariantType.String, dt.datetime: ua.VariantType.DateTime}
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)


class ServerMode:
    def __init__(self, agent: OpcuaAgent, views: tuple[str, ...]):
        self.agent = agent
        self.p: OpcuaParams = agent.params
        self.views = views
        self.join: Join[Message] = Join(views, self.p.join_timeout)
        self.loop = LoopThread(agent.name)
        self.server: Server | None = None
        self.idx = 0
        self.nodes: dict[str, Any] = {}  # path -> node
        self.counts = {"Total": 0, "Ok": 0, "Defective": 0, "Incomplete": 0}
        self.sequence = 0
        self.health = GraphHealth(agent)
        self.next_health = 0.0

    # --- start and stop -----------------------------------------------------------------

    def start(self) -> None:
        self.loop.run(self._serve(), timeout=30)
        self.agent.status.update(server="listening", endpoint=self.p.url, parts=0)
        self.agent.log.info("OPC UA server listening on %s (namespace %s)", self.p.url, self.p.namespace)

    async def _serve(self) -> None:
        user, password = credentials(self.p.secret)
        server = new_server(user, password)
        await server.init()
        server.set_endpoint(self.p.url)
        server.set_server_name(f"graphrun {self.agent.graph or ''} {self.agent.name}".replace("  ", " "))
        await secure_server(server, self.p.security, users=bool(user and password))
        self.idx = await server.register_namespace(self.p.namespace)
        line = await server.nodes.objects.add_object(ua.NodeId("Line", self.idx), ua.QualifiedName("Line", self.idx))
        self.nodes["Line"] = line
        last = {"PartId": 0, "Outcome": "", "Label": "", "Score": 0.0, "Sequence": 0, "Missing": "", "Time": _EPOCH}
        await self._variables("LastResult", last)
        for view in self.views:
            await self._variables(f"Views.{view}", {"PartId": 0, "Defective": False, "Label": "", "Score": 0.0,
                                                    "ModelVersion": ""})
        await self._variables("Counters", dict(self.counts))
        await self._variables("", {"RejectRate": 0.0, "ModelVersion": ""})
        await self._variables("Health", {"State": "running"})
        await self._folder("Health.Agents")
        await server.start()
        self.server = server

    async def _folder(self, path: str) -> Any:
        """The object at ``path`` (dotted, under Line), made on first use."""
        if not path:
            return self.nodes["Line"]
        if path not in self.nodes:
            parent_path, _, name = path.rpartition(".")
            parent = await self._folder(parent_path)
            self.nodes[path] = await parent.add_object(ua.NodeId(f"Line.{path}", self.idx),
                                                       ua.QualifiedName(name, self.idx))
        return self.nodes[path]

    async def _variables(self, path: str, values: dict[str, Any]) -> None:
        folder = await self._folder(path)
        for name, value in values.items():
            full = f"{path}.{name}" if path else name
            self.nodes[full] = await folder.add_variable(ua.NodeId(f"Line.{full}", self.idx),
                                                         ua.QualifiedName(name, self.idx), value,
                                                         varianttype=_TYPES[type(value)])

    def stop(self) -> None:
        if self.server is not None:
            try:
                self.loop.run(self.server.stop(), timeout=10)
            except Exception:
                self.agent.log.exception("the OPC UA server did not stop cleanly")
        self.loop.close()

    # --- messages and time ----------------------------------------------------------------

    def handle(self, msg: Message) -> None:
        if "part_id" not in msg.payload:
            raise DeadLetter(f"verdict on {msg.port!r} has no part_id")
        now = time.monotonic()
        self.join.offer(msg.port or "", msg.payload, msg, now)
        self.agent.hold(msg)
        self.loop.run(self._set({f"Views.{msg.port}.{k}": v for k, v in {
            "PartId": int(msg["part_id"]), "Defective": bool(msg.get("defective")),
            "Label": str(msg.get("label", "")), "Score": float(msg.get("score", 0.0)),
            "ModelVersion": str(msg.get("model_version", "")),
        }.items()} | ({"ModelVersion": str(msg["model_version"])} if msg.get("model_version") else {})), timeout=10)
        self._publish()

    def tick(self) -> None:
        self.join.expire(time.monotonic())
        self._publish()
        if time.monotonic() >= self.next_health:
            self.next_health = time.monotonic() + self.p.health_interval
            self._health()

    def _publish(self) -> None:
        """Put every closed part into the address space, in order, and acknowledge its verdicts."""
        while self.join.queue:
            part = self.join.queue[0]
            self.loop.run(self._set(self._state(part)), timeout=10)
            self.join.written(part)
            self.agent.release(*part.items)
            self.agent.status["parts"] = self.counts["Total"]

    def _state(self, part: Part[Message]) -> dict[str, Any]:
        outcome = part.outcome or Outcome.INCOMPLETE
        self.sequence += 1
        part.sequence = self.sequence
        self.counts["Total"] += 1
        self.counts[outcome.value.capitalize()] += 1
        rejected = self.counts["Total"] - self.counts["Ok"]
        return {
            "LastResult.PartId": part.part_id, "LastResult.Outcome": outcome.value, "LastResult.Label": part.label,
            "LastResult.Score": part.score, "LastResult.Sequence": self.sequence,
            "LastResult.Missing": ",".join(part.missing), "LastResult.Time": dt.datetime.now(dt.timezone.utc),
            **{f"Counters.{k}": v for k, v in self.counts.items()},
            "RejectRate": rejected / self.counts["Total"],
        }

    def _health(self) -> None:
        snapshot = self.health.snapshot()
        states = {a["name"]: ("stale" if a.get("stale") else str(a["state"])) for a in (snapshot or {}).get("agents", [])}
        states.pop(self.agent.name, None)

        async def update() -> None:
            for name, state in states.items():
                path = f"Health.Agents.{name}"
                if path not in self.nodes:
                    await self._variables("Health.Agents", {name: state})
            await self._set({f"Health.Agents.{n}": s for n, s in states.items()} | {"Health.State": "running"})
        self.loop.run(update(), timeout=10)

    async def _set(self, values: dict[str, Any]) -> None:
        assert self.server is not None
        for path, value in values.items():
            node = self.nodes[path]
            kind = _TYPES[type(value)]
            await self.server.write_attribute_value(node.nodeid, ua.DataValue(ua.Variant(value, kind)))
