"""Where requests from outside the graph go, and how they and their answers look on Redis.

Shared by the blocking ``GraphClient`` and the asyncio ``AsyncGraphClient``: a client is
made for a graph file (ports named ``AGENT.PORT``, the answering port found by following
the graph downstream) or for one Redis URL (ports named by their stream key, the
answering port named by the caller, since nothing tells it).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from . import codec, transport
from .delivery import REPLY_END
from .errors import ConfigError, UnknownPort
from .graph import Graph, load_graph, redis_url
from .message import Message, Request

URL_SCHEMES = ("redis://", "rediss://", "unix://", f"{transport.SENTINEL_SCHEME}://")
DEFAULT_INSTANCE = "main"  # the Redis instance a client made from a URL stands for
BACKLOG_COUNT_CAP = 100_000  # entries counted one by one when Redis cannot tell a group's lag


@dataclass(frozen=True)
class Port:
    """An input port that takes requests: its stream, its reader and its answering port."""

    name: str  # as the caller named it
    instance: str
    key: str
    group: str | None  # the consumer group reading it (the agent); None: any (a client by URL)
    answer: str | None  # AGENT.PORT whose output answers, when the graph tells


class Target:
    """A graph's Redis instances and ports, or one Redis by URL."""

    def __init__(self, target: str | os.PathLike[str] | Graph, redis_urls: Mapping[str, str] | None = None):
        self.graph: Graph | None = None
        if isinstance(target, Graph):
            self.graph = target
        elif isinstance(target, str) and target.startswith(URL_SCHEMES):
            self.urls = {DEFAULT_INSTANCE: target}
        else:
            self.graph = load_graph(Path(target))
        self.missing: dict[str, str] = {}  # instance -> why it has no URL
        if self.graph is not None:
            overrides = dict(redis_urls or {})
            self.urls = {}
            for instance in self.graph.redis:
                try:
                    self.urls[instance] = redis_url(self.graph, instance, overrides)
                except ConfigError as exc:  # an error only when a request goes there
                    self.missing[instance] = str(exc)
            if not self.urls:
                raise ConfigError("; ".join(self.missing.values()))
        self.name = self.graph.name if self.graph is not None else "url"
        self.reply_instance = reply_instance(self.urls)
        self._ports: dict[str, Port] = {}

    def port(self, name: str) -> Port:
        found = self._ports.get(name)
        if found is None:
            found = self._ports[name] = self._port(name)
        return found

    def _port(self, name: str) -> Port:
        if self.graph is None:
            return Port(name, DEFAULT_INSTANCE, name, None, None)
        graph = self.graph
        agent, dot, port = name.rpartition(".")
        node = graph.agents.get(agent)
        if not dot or node is None:
            raise UnknownPort(f"expected AGENT.PORT of an input of graph {graph.name!r}, got {name!r} "
                              f"(agents: {', '.join(sorted(graph.agents))})")
        binding = node.inputs.get(port)
        if binding is None:
            inputs = ", ".join(f"{agent}.{p}" for p in sorted(node.inputs)) or "none"
            raise UnknownPort(f"agent {agent!r} has no input {port!r} connected in graph {graph.name!r}; "
                              f"its inputs: {inputs}")
        if binding.instance in self.missing:
            raise ConfigError(f"{name}: {self.missing[binding.instance]}")
        return Port(name, binding.instance, binding.key, agent, answering_port(graph, agent))

    def answer_of(self, port: Port, answer: str | None) -> str:
        """The answering AGENT.PORT: the caller's, else the graph's."""
        if answer is not None:
            return answer
        if port.answer is None:
            why = ("a client made from a Redis URL cannot follow the graph" if self.graph is None
                   else f"the graph does not tell which output of the agents after {port.name} answers")
            raise ConfigError(f"name the answering port (answer='AGENT.PORT') for requests to {port.name}: {why}")
        return port.answer


def reply_instance(instances: Iterable[str]) -> str:
    """The Redis instance where a client's reply stream lives: ``main``, else the first."""
    instances = list(instances)
    return DEFAULT_INSTANCE if DEFAULT_INSTANCE in instances else instances[0]


def answering_port(graph: Graph, agent: str) -> str | None:
    """The output that answers a request to ``agent``: follow the graph downstream while each
    agent has one output read by exactly one other agent; the answer is the output where
    that ends (nobody reads it, or several do). None when an agent on the way has several
    outputs, or none."""
    seen = set()
    while agent not in seen:
        seen.add(agent)
        node = graph.agents[agent]
        outputs = list(node.outputs) or [n for n, p in node.agent_class.ports().items()
                                         if p.direction == "output" and not p.dynamic]
        if len(outputs) != 1:
            return None
        readers = [a.name for a in graph.agents.values()
                   for b in a.inputs.values() if b.source == (agent, outputs[0])]
        if len(readers) != 1:
            return f"{agent}.{outputs[0]}"
        agent = readers[0]
    return None  # a cycle: no end to follow to


def request_fields(payload: Mapping[str, Any], request: Request, producer: str) -> dict[bytes, Any]:
    """The stream entry of one request: a message whose envelope carries ``request``."""
    return codec.encode(Message(payload, producer=producer, request=request))


def parse_reply(fields: Mapping[bytes, bytes]) -> tuple[Message, bool]:
    """(the answer, whether it is the last entry of its answer) from a reply stream's entry."""
    return codec.decode(fields), REPLY_END in fields


def backlog(client: redis.Redis, port: Port) -> int:
    """Entries of ``port``'s stream its consumer group has not finished: not yet read (lag)
    plus read and not yet acknowledged (pending). For a client by URL, the largest over the
    stream's groups; with no group yet, the stream's length."""
    try:
        groups = client.xinfo_groups(port.key)
    except redis.ResponseError:  # no stream yet
        return 0
    if port.group is not None:
        groups = [g for g in groups if transport.text(g["name"]) == port.group]
    if not groups:
        return int(client.xlen(port.key))
    return max(_unfinished(client, port.key, g) for g in groups)


def _unfinished(client: redis.Redis, key: str, group: Mapping[str, Any]) -> int:
    lag = group.get("lag")
    if lag is None:  # Redis cannot tell (entries deleted): count what follows the last read
        last = transport.text(group["last-delivered-id"])
        lag = len(client.xrange(key, f"({last}", "+", count=BACKLOG_COUNT_CAP))
    return int(lag) + int(group["pending"])
