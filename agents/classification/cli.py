"""`graphrun model deploy|rollback|list`: model versions of a graph's classification agents.

A deploy checks the model against the agent's pre-processing before storing it, so a
model the running agents could not use never becomes active.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import redis

from graphrun import AgentNode, ConfigError, Graph, add_redis_option, connect_redis, load_graph, redis_url

from . import backends
from .agent import ClassificationAgent
from .model import inspect, read_model, spec_for
from .params import ClassificationParams
from .redisai import store_model
from .versions import ModelVersions


def register(subparsers: argparse._SubParsersAction) -> None:
    model = subparsers.add_parser("model", help="deploy, roll back and list model versions of classification agents")
    sub = model.add_subparsers(dest="model_command", metavar="ACTION", required=True)

    def common(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("graph", type=Path)
        add_redis_option(parser)

    deploy = sub.add_parser("deploy", help="store a model version and make the agent's replicas switch to it")
    common(deploy)
    deploy.add_argument("agent")
    deploy.add_argument("model", type=Path, metavar="MODEL.onnx")
    deploy.add_argument("--version", help="version name (default: the model's metadata, else its hash)")
    deploy.set_defaults(func=cmd_deploy)

    rollback = sub.add_parser("rollback", help="go back to the version active before the current one")
    common(rollback)
    rollback.add_argument("agent")
    rollback.set_defaults(func=cmd_rollback)

    listing = sub.add_parser("list", help="the stored versions and which agents run them")
    common(listing)
    listing.set_defaults(func=cmd_list)


class _Clients:
    """One client per Redis instance of the graph, made on first use."""

    def __init__(self, graph: Graph, overrides: dict[str, str]):
        self.graph = graph
        self.overrides = overrides
        self._clients: dict[str, redis.Redis] = {}

    def __call__(self, instance: str) -> redis.Redis:
        if instance not in self._clients:
            self._clients[instance] = connect_redis(redis_url(self.graph, instance, self.overrides))
        return self._clients[instance]


def _classifiers(graph: Graph) -> dict[str, AgentNode]:
    return {n: a for n, a in graph.agents.items() if issubclass(a.agent_class, ClassificationAgent)}


def _classifier(graph: Graph, name: str) -> tuple[AgentNode, ClassificationParams]:
    found = _classifiers(graph)
    if name not in found:
        raise ConfigError(
            f"graph {graph.name!r} has no classification agent {name!r} (classification agents: {', '.join(found) or 'none'})"
        )
    node = found[name]
    return node, node.settings  # type: ignore[return-value]


def _handle_redis_errors(command: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        try:
            return command(args)
        except redis.RedisError as exc:
            print(f"graphrun model: Redis error: {exc}", file=sys.stderr)
            return 1

    return run


@_handle_redis_errors
def cmd_deploy(args: argparse.Namespace) -> int:
    graph = load_graph(args.graph)
    node, params = _classifier(graph, args.agent)
    clients = _Clients(graph, dict(args.redis))
    blob = read_model(args.model)
    info = inspect(blob, fallback_name=args.model.stem)
    version = args.version or info.version
    spec_for(info, params.preprocess, version)  # refuse a model the agent could not use
    store = ModelVersions(clients(params.registry_instance(graph.home_redis(node.name))), node.name)
    if store.active() == version:
        print(f"{node.name}: version {version} is already active")
        return 0
    backend, why = backends.choose_backend(params, clients)
    if backend == "redisai":
        assert params.redisai is not None
        store_model(clients(params.redisai), store.ai_key(version), blob, device=params.device, tag=version,
                    chunk_bytes=params.chunk_bytes)
    store.add(blob, version=version, name=params.model_name or info.name, sha256=info.sha256)
    print(
        f"{node.name}: deployed {params.model_name or info.name} version {version} ({len(blob)} bytes, "
        f"{backend}: {why}); running replicas switch within {params.check_interval_ms:g} ms"
    )
    return 0


@_handle_redis_errors
def cmd_rollback(args: argparse.Namespace) -> int:
    graph = load_graph(args.graph)
    node, params = _classifier(graph, args.agent)
    store = ModelVersions(_Clients(graph, dict(args.redis))(params.registry_instance(graph.home_redis(node.name))), node.name)
    previous = store.active()
    version = store.rollback()
    print(f"{node.name}: rolled back from version {previous} to {version}")
    return 0


@_handle_redis_errors
def cmd_list(args: argparse.Namespace) -> int:
    graph = load_graph(args.graph)
    clients = _Clients(graph, dict(args.redis))
    rows = [("AGENT", "VERSION", "ACTIVE", "MODEL", "BYTES", "DEPLOYED", "RUN BY")]
    for name, node in _classifiers(graph).items():
        params: ClassificationParams = node.settings  # type: ignore[assignment]
        store = ModelVersions(clients(params.registry_instance(graph.home_redis(name))), name)
        running: dict[str, list[str]] = {}
        for instance, record in store.running().items():
            running.setdefault(record["version"], []).append(instance)
        versions = store.versions()
        if not versions:
            rows.append((name, "-", "", "(no version stored yet: the agent registers its model file on start)", "", "", ""))
        for v in versions:
            deployed = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(v.deployed))
            rows.append((name, v.version, "*" if v.active else "", v.name, str(v.size), deployed,
                         ", ".join(sorted(running.get(v.version, []))) or "-"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    return 0
