"""An OPC UA PLC simulator: an asyncua server holding exactly the nodes an opcua agent
(client mode) maps, for demos, tests and benchmarks without a PLC.

Each result is recorded when its sequence node is written (the agent writes it last,
so the other nodes already hold that result). With ``take_results`` the simulator
echoes the sequence in the handshake node, as a PLC program would. With ``pulse``
(seconds) it plays the PLC's part-present signal on the subscribed nodes: a Boolean
turns true then false, an integer counts up.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from asyncua import Server, ua
from asyncua.common.callback import CallbackType

from ..errors import OpcuaUnreachable
from .loop import LoopThread
from .params import NodeSpec, OpcuaParams, Security
from .security import new_server, secure_server
from .values import variant

log = logging.getLogger("graphrun.agent.opcua.simulator")

#: Node types when the agent's map gives none.
DEFAULT_TYPES = {"sequence": "UInt32", "part_id": "UInt64", "outcome": "Int16", "defective": "Boolean",
                 "score": "Float", "label": "String", "code": "Int16", "missing": "String", "time": "DateTime",
                 "handshake": "UInt32"}
_ZERO: dict[str, Any] = {"Boolean": False, "Float": 0.0, "Double": 0.0, "String": "",
                         "DateTime": dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)}


@dataclass(frozen=True)
class SimResult:
    """One result as the simulated PLC holds it when its sequence node is written."""

    sequence: int
    values: dict[str, Any]

    def as_json(self) -> str:
        return json.dumps({"sequence": self.sequence, **self.values}, default=str)


class OpcuaPlcSim:
    """Runs the simulated PLC's server in a thread of its own; ``start`` returns once it listens."""

    def __init__(self, params: OpcuaParams, *, url: str | None = None, take_results: bool = True,
                 pulse: float | None = None, on_result: Callable[[SimResult], None] | None = None,
                 security: Security | None = None, user: tuple[str, str] | None = None):
        self.params = params
        self.security = security  # the server's own policy, certificate and key
        self.user = user  # the one user name and password accepted
        self.url = url or params.url
        self.take_results = take_results
        self.pulse = pulse
        self.on_result = on_result
        self.results: list[SimResult] = []
        self.stopped = threading.Event()
        self._loop: LoopThread | None = None
        self._server: Server | None = None
        self._specs: dict[str, NodeSpec] = dict(params.nodes.entries())
        if params.handshake is not None:
            self._specs["handshake"] = params.handshake
        self._nodes: dict[str, Any] = {}
        self._pulser: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._loop = LoopThread("opcua-sim")
        try:
            self._loop.run(self._serve(), timeout=30)
        except OSError as exc:
            self._loop.close()
            raise OpcuaUnreachable(f"the OPC UA simulator cannot listen on {self.url}: {exc}") from exc

    def stop(self) -> None:
        if self._loop is None:
            return
        if self._server is not None:
            self._loop.run(self._shutdown(), timeout=10)
        self._loop.close()
        self.stopped.set()

    def wait(self) -> None:
        self.stopped.wait()

    def read(self, name: str) -> Any:
        """The value the simulated PLC holds for a field (or a subscription name)."""
        assert self._loop is not None
        return self._loop.run(self._nodes[name].read_value(), timeout=5)

    def write(self, name: str, value: Any) -> None:
        """Set a node as the PLC program would (a part-present signal, say)."""
        assert self._loop is not None
        node = self._nodes[name]
        kind = self._kind(name)
        self._loop.run(node.write_value(variant(name, value, kind)), timeout=5)

    # --- the server -----------------------------------------------------------------

    def _kind(self, name: str) -> str:
        spec = self._specs.get(name) or self.params.subscribe[name]
        return spec.type or DEFAULT_TYPES.get(name, "Boolean")

    async def _serve(self) -> None:
        server = new_server(*(self.user or (None, None)))
        await server.init()
        server.set_endpoint(self.url)
        server.set_server_name("graphrun OPC UA PLC simulator")
        await secure_server(server, self.security, users=self.user is not None)
        specs = {**self._specs, **self.params.subscribe}
        highest = max((ua.NodeId.from_string(s.node).NamespaceIndex for s in specs.values()), default=1)
        while len(await server.get_namespace_array()) <= highest:
            await server.register_namespace(f"urn:graphrun:plc-sim:{len(await server.get_namespace_array())}")
        for name, spec in specs.items():
            kind = self._kind(name)
            node = await server.nodes.objects.add_variable(
                ua.NodeId.from_string(spec.node), ua.QualifiedName(name, ua.NodeId.from_string(spec.node).NamespaceIndex),
                _ZERO.get(kind, 0), varianttype=getattr(ua.VariantType, kind))
            await node.set_writable()
            self._nodes[name] = node
        server.subscribe_server_callback(CallbackType.PostWrite, self._written)
        await server.start()
        self._server = server
        if self.pulse:
            self._pulser = asyncio.get_running_loop().create_task(self._pulse())

    async def _shutdown(self) -> None:
        if self._pulser is not None:
            self._pulser.cancel()
        assert self._server is not None
        await self._server.stop()

    async def _written(self, event: Any, dispatcher: Any) -> None:
        sequence_node = self._nodes.get("sequence")
        if sequence_node is None:
            return
        for write, status in zip(event.request_params.NodesToWrite, event.response_params):
            if write.NodeId != sequence_node.nodeid or not status.is_good():
                continue
            sequence = int(write.Value.Value.Value)
            values = {n: await self._nodes[n].read_value() for n in self._specs if n not in ("sequence", "handshake")}
            result = SimResult(sequence, values)
            self.results.append(result)
            if self.take_results and "handshake" in self._nodes:
                await self._nodes["handshake"].write_value(variant("handshake", sequence, self._kind("handshake")))
            if self.on_result is not None:
                self.on_result(result)

    async def _pulse(self) -> None:
        """The PLC's part-present signal: every ``pulse`` seconds, on each subscribed node."""
        assert self.pulse
        count = 0
        while True:
            await asyncio.sleep(self.pulse / 2)
            count += 1
            for name in self.params.subscribe:
                kind = self._kind(name)
                if kind == "Boolean":
                    await self._nodes[name].write_value(ua.Variant(count % 2 == 1, ua.VariantType.Boolean))
                elif count % 2 == 1:
                    await self._nodes[name].write_value(variant(name, (count + 1) // 2, kind))
