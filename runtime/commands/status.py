"""``graphrun status GRAPH``: the health the agents of a running graph publish."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from .. import transport
from ..cli import add_redis_option
from ..errors import ConfigError
from ..graph import Graph, load_graph, redis_url
from ..health import HEALTH_PREFIX


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    status = subparsers.add_parser("status", help="show the health the agents of a graph publish")
    status.add_argument("graph", type=Path)
    add_redis_option(status)
    status.set_defaults(func=cmd_status)


def cmd_status(args: argparse.Namespace) -> int:
    graph: Graph = load_graph(args.graph)
    overrides = dict(args.redis)
    now = time.time()
    for instance in graph.redis:
        try:
            client = transport.connect(redis_url(graph, instance, overrides), socket_timeout=5)
            keys = sorted(client.scan_iter(f"{HEALTH_PREFIX}{graph.name}:*"))
        except (ConfigError, *transport.CONNECTION_ERRORS) as exc:
            print(f"{instance}: unavailable: {exc}")
            continue
        for key in keys:
            for consumer, raw in sorted(client.hgetall(key).items()):
                record = json.loads(raw)
                age = now - record.pop("time", now)
                print(f"{record.pop('agent')} [{consumer.decode()}] {record.pop('state')} ({age:.0f} s ago): "
                      + ", ".join(f"{k}={v}" for k, v in record.items()))
    return 0
