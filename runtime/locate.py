"""Finding a running graph from its graph file, whatever the working directory.

Every command that looks at a running graph (status, echo, hz, dead, record, trace…)
starts here. A Redis instance's URL comes from ``--redis NAME=URL``, the graph file,
the environment (``GRAPHRUN_REDIS_<NAME>``) or the run record that ``graphrun run``
keeps beside the graph file (``.graphrun/<name>/redis.json``); see ``graph.redis_url``.
A graph counts as running when one of its Redis instances answers and at least one of
its agents has published a fresh heartbeat there.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import redis

from . import transport
from .errors import ConfigError, GraphNotRunning, UnknownPort
from .graph import Graph, InputBinding, StreamRef, redis_url
from .health import STALE_AFTER, health_key

CONNECT_TIMEOUT = 2.0


@dataclass
class RunningGraph:
    """A graph's reachable Redis instances, and why the others are not."""

    graph: Graph
    clients: dict[str, redis.Redis]
    unreachable: dict[str, str] = field(default_factory=dict)  # instance -> why

    def client(self, instance: str) -> redis.Redis:
        try:
            return self.clients[instance]
        except KeyError:
            why = self.unreachable.get(instance, "not a Redis instance of the graph")
            raise GraphNotRunning(f"Redis instance {instance!r} of graph {self.graph.name!r}: {why}") from None

    def heartbeats(self) -> Iterator[tuple[str, str, dict[str, Any]]]:
        """(agent, consumer, health record) of every replica that reported, on any instance."""
        for agent in self.graph.agents:
            home = self.graph.home_redis(agent)
            client = self.clients.get(home)
            if client is None:
                continue
            for consumer, raw in client.hgetall(health_key(self.graph.name, agent)).items():
                yield agent, consumer.decode(), json.loads(raw)

    def close(self) -> None:
        for client in self.clients.values():
            client.connection_pool.disconnect()


def connect(graph: Graph, overrides: Mapping[str, str] | None = None) -> RunningGraph:
    """Clients for the graph's Redis instances that answer; raises GraphNotRunning when none does."""
    clients: dict[str, redis.Redis] = {}
    unreachable: dict[str, str] = {}
    for instance in graph.redis:
        try:
            url = redis_url(graph, instance, dict(overrides or {}))
        except ConfigError as exc:
            unreachable[instance] = str(exc)
            continue
        client = transport.connect(url, socket_timeout=CONNECT_TIMEOUT, name="graphrun-observer")
        try:
            client.ping()
        except (*transport.CONNECTION_ERRORS, redis.ResponseError) as exc:
            unreachable[instance] = f"{transport.describe(url)} does not answer ({exc})"
            client.connection_pool.disconnect()
            continue
        clients[instance] = client
    if not clients:
        reasons = "; ".join(f"{i}: {why}" for i, why in unreachable.items())
        raise GraphNotRunning(f"graph {graph.name!r} is not running: no Redis instance answers ({reasons})")
    return RunningGraph(graph, clients, unreachable)


def running(graph: Graph, overrides: Mapping[str, str] | None = None, *,
            stale_after: float = STALE_AFTER) -> RunningGraph:
    """Like ``connect``, and at least one agent, not stopped, has reported within
    ``stale_after`` seconds. (A replica stale by its own interval still shows the graph is
    there: status shows it stale.)"""
    found = connect(graph, overrides)
    now = time.time()
    if not any(now - record.get("time", 0) < stale_after and record.get("state") != "stopped"
               for _, _, record in found.heartbeats()):
        found.close()
        raise GraphNotRunning(f"graph {graph.name!r} is not running: its Redis answers, but no agent has "
                              f"reported in the last {stale_after:.0f} s")
    return found


def port_stream(graph: Graph, port: str) -> StreamRef:
    """The stream of ``AGENT.PORT``: an output port's stream, or the stream an input port reads.

    Raises UnknownPort naming the graph's agents, or the agent's ports, so that a typo is
    answered with what could have been meant.
    """
    agent, dot, name = port.rpartition(".")
    if not dot or not agent or not name:
        raise UnknownPort(f"expected AGENT.PORT, got {port!r} (agents of graph {graph.name!r}: "
                          f"{', '.join(sorted(graph.agents))})")
    node = graph.agents.get(agent)
    if node is None:
        raise UnknownPort(f"graph {graph.name!r} has no agent {agent!r} (agents: {', '.join(sorted(graph.agents))})")
    binding = node.outputs.get(name) or node.inputs.get(name)
    if binding is None:
        known = [f"{agent}.{p} (output)" for p in sorted(node.outputs)] + [f"{agent}.{p} (input)" for p in sorted(node.inputs)]
        raise UnknownPort(f"agent {agent!r} has no port {name!r}; its ports: {', '.join(known) or 'none'}")
    return binding.stream


def dead_letter_streams(graph: Graph) -> dict[StreamRef, list[tuple[str, InputBinding]]]:
    """Every dead-letter stream of the graph's inputs, with the (agent, input) that write to it."""
    found: dict[StreamRef, list[tuple[str, InputBinding]]] = {}
    for node in graph.agents.values():
        for binding in node.inputs.values():
            found.setdefault(binding.dead_letter, []).append((node.name, binding))
    return found
