"""What every way of deploying a graph shares: Docker Compose files and Kubernetes manifests.

Both read the same answers from the graph: where each Redis instance runs, what each
agent's container needs (its class says: ``Agent.deployment``), which instances an agent
connects to, the command a container runs, the command that checks its health, and the
command line of a Redis server. Keeping them here keeps the two outputs consistent.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from . import __version__
from .deployment import Deployment, RedisModule
from .errors import AgentTypeError, ConfigError
from .graph import AgentNode, Graph, RedisSpec, env_name, load_graph
from .redis_server import persistence_args

DEFAULT_IMAGE = f"graphrun:{__version__}"
REDIS_IMAGE = "redis:7.2"
REDIS_PORT = 6379
GRAPH_DIR = "/graph"
STOP_GRACE_S = 20  # agents finish the message in hand on SIGTERM, then flush
# The Dockerfile's HEALTHCHECK timings, written out: a heartbeat comes every 2 s and is stale
# after 10 s; an agent may take a minute to start (a device to open, weights to load).
HEALTH_INTERVAL_S, HEALTH_TIMEOUT_S, HEALTH_START_S, HEALTH_RETRIES = 10, 5, 60, 3


def node_host_variable(node: str) -> str:
    """The variable a node's address is read from when the graph gives no ``host:``."""
    return "GRAPHRUN_NODE_" + env_name(node).removeprefix("GRAPHRUN_REDIS_") + "_HOST"


# --- what each agent's container needs (the agent class says: Agent.deployment) ----------


def deployment_of(agent: AgentNode) -> Deployment:
    """What the agent's class says its container needs, given the agent's params."""
    deployment = agent.agent_class.deployment(agent.settings)
    if not isinstance(deployment, Deployment):
        raise AgentTypeError(f"agent {agent.name!r}: {agent.agent_class.__qualname__}.deployment() returned "
                             f"{type(deployment).__name__}, not a graphrun Deployment")
    return deployment


def deployments_of(graph: Graph) -> dict[str, Deployment]:
    """What each agent's container needs, by agent name; an agent asking for a Redis module
    on an instance the graph does not have is refused here, before anything is written."""
    deployments = {name: deployment_of(agent) for name, agent in graph.agents.items()}
    for name, deployment in deployments.items():
        unknown = sorted(set(deployment.redis_modules) - set(graph.redis))
        if unknown:
            raise ConfigError(f"agent {name!r} needs a Redis module on instance(s) {', '.join(unknown)}, "
                              f"which graph {graph.name!r} does not have (instances: {', '.join(graph.redis)})")
    return deployments


def redis_module(deployments: dict[str, Deployment], instance: str) -> RedisModule | None:
    """The module a Redis instance loads for the agents that need one there.

    A GPU build of a module serves agents computing on the CPU too, so it wins; two
    different modules cannot share one image, so they are refused.
    """
    wanted = {name: d.redis_modules[instance] for name, d in deployments.items() if instance in d.redis_modules}
    if len({m.name for m in wanted.values()}) > 1:
        needs = ", ".join(f"{agent} needs {m.name}" for agent, m in wanted.items())
        raise ConfigError(f"Redis instance {instance!r} cannot run one image for every agent ({needs}): "
                          "give each module an instance of its own")
    return next((m for m in wanted.values() if m.gpu), next(iter(wanted.values()), None))


# --- where each Redis instance runs -------------------------------------------------------


@dataclass(frozen=True)
class Placement:
    """Which node runs each Redis instance that has no url, and on which published port."""

    hosts: dict[str, str]  # instance -> the node running it
    ports: dict[str, int]  # instance -> port published on its node

    @classmethod
    def of(cls, graph: Graph) -> Placement:
        hosts: dict[str, str] = {}
        for instance, spec in graph.redis.items():
            if spec.url:
                continue
            # Several nodes may name one instance as their default; the first runs it.
            named = [n for n, node in graph.nodes.items() if node.redis == instance]
            if not named and len(graph.nodes) == 1:
                named = list(graph.nodes)
            if not named:
                raise ConfigError(
                    f"Redis instance {instance!r} has no url and no node hosts it: add `redis: {instance}` "
                    f"to the node that should run it, or give it a url"
                )
            hosts[instance] = named[0]
        ports: dict[str, int] = {}
        for node in graph.nodes:
            local = [i for i, n in hosts.items() if n == node]
            ports.update({i: REDIS_PORT + k for k, i in enumerate(local)})
        return cls(hosts, ports)

    def on(self, node: str) -> list[str]:
        """The instances a node runs, in the graph's order."""
        return [i for i, n in self.hosts.items() if n == node]

    def url(self, graph: Graph, instance: str, node: str, *, host_network: bool) -> str | None:
        """The URL an agent on ``node`` uses; None when graphrun reads it from the graph."""
        there = self.hosts.get(instance)
        if there is None:
            return None
        if there == node:
            if host_network:
                return f"redis://127.0.0.1:{self.ports[instance]}/0"
            return f"redis://redis-{instance}:{REDIS_PORT}/0"
        host = graph.nodes[there].host or f"${{{node_host_variable(there)}:?set the address of node {there}}}"
        return f"redis://{host}:{self.ports[instance]}/0"


def instances_used(graph: Graph, agent: AgentNode, deployment: Deployment) -> list[str]:
    """The instances an agent connects to: its ports', its node's own, those whose module it
    needs, and any a top-level param names (an agent opens those itself)."""
    named = {v for v in agent.params.values() if isinstance(v, str) and v in graph.redis}
    used = agent.instances | {graph.home_redis(agent.name)} | named | set(deployment.redis_modules)
    return [i for i in graph.redis if i in used]


def agent_command(graph_file: str, agent: str, *, replica: int | None = None, consumer: str | None = None) -> list[str]:
    """The ``graphrun`` arguments that run one replica of an agent (the image's entrypoint is graphrun)."""
    command = ["agent", graph_file, agent]
    if consumer is not None:
        return [*command, "--consumer", consumer]
    return [*command, "--replica", str(replica if replica is not None else 0)]


def health_command(graph_file: str, agent: str, *, replica: int | None = None, consumer: str | None = None) -> list[str]:
    """The heartbeat check `graphrun status` makes: healthy while the replica reports "running"."""
    command = ["graphrun", "status", graph_file, "--agent", agent]
    if consumer is not None:
        command += ["--consumer", consumer]
    elif replica is not None:
        command += ["--replica", str(replica)]
    return [*command, "--check"]


def redis_command(spec: RedisSpec, module: RedisModule | None) -> list[str]:
    """A hosted instance's server command line. A module image's own command only loads the
    module: the persistence the graph declares must be given beside it, or the image's
    defaults would silently apply."""
    loaded = ["--loadmodule", module.path] if module else []
    return ["redis-server", *loaded, *persistence_args(spec.persistence),
            *(["--maxmemory", spec.maxmemory] if spec.maxmemory else [])]


def check_node(graph: Graph, node: str | None) -> None:
    """Refuse a ``--node`` the graph does not have (None: every node)."""
    if node is not None and node not in graph.nodes:
        raise ConfigError(f"graph {graph.name!r} has no node {node!r} (nodes: {', '.join(graph.nodes)})")


def passed_through(graph: Graph, looked_up: Iterable[str]) -> list[str]:
    """The variables a graph file reads that the deployment must pass on from the machine:
    all it looked up but the Redis URLs, which the deployment sets itself."""
    return sorted(n for n in looked_up if n not in {env_name(i) for i in graph.redis})


def remove_stale(out: Path, pattern: str, written: list[Path], marker: str) -> None:
    """Remove the files matching ``pattern`` in ``out`` that were generated (their first line
    carries ``marker``) but not written now: a node gone from the graph leaves no stale file."""
    for old in sorted(out.glob(pattern)):
        if old not in written and marker in old.read_text(encoding="utf-8", errors="replace").split("\n", 1)[0]:
            old.unlink()


def load(graph_file: Path) -> tuple[Graph, Environ]:
    """The graph for a deployment command, with the environment that remembers which
    variables the graph file read (the deployment passes those on)."""
    environ = Environ()
    return load_graph(graph_file, environ=environ), environ


class Environ(dict):  # type: ignore[type-arg]
    """The process environment, remembering which names a graph file looks up."""

    def __init__(self) -> None:
        super().__init__(os.environ)
        self.looked_up: set[str] = set()

    def __contains__(self, name: object) -> bool:
        self.looked_up.add(str(name))
        return super().__contains__(name)


class Dumper(yaml.SafeDumper):
    """Plain YAML for people: no anchors, short lists of words on one line, text of several
    lines (a graph file in a ConfigMap) as a block."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _list(dumper: yaml.SafeDumper, items: list[Any]) -> yaml.Node:
    flow = all(isinstance(i, (str, int, float, bool)) for i in items) and len(str(items)) < 100
    return dumper.represent_sequence("tag:yaml.org,2002:seq", items, flow_style=flow)


def _text(dumper: yaml.SafeDumper, text: str) -> yaml.Node:
    block = "\n" in text and "\t" not in text and not any(line.endswith(" ") for line in text.splitlines())
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style="|" if block else None)


Dumper.add_representer(list, _list)
Dumper.add_representer(str, _text)
