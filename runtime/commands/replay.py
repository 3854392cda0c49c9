"""``graphrun replay FILE.mcap GRAPH``: write a recording's entries into a graph's streams.

Each recorded stream goes to the stream of the same ``AGENT.PORT`` in the target graph
(or where ``--ports REC=TARGET`` says), with the recorded bytes as they were: the
envelope (id, producer, origin time, hops) and the arrays are not re-encoded. Entries get
new ids in the target; the recorded relative timing is kept, scaled by ``--speed``
(0: as fast as Redis takes them). Each stream stays within its target bounds.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from .. import locate, transport
from ..cli import add_redis_option
from ..errors import ConfigError, GraphNotRunning, RecordingError
from ..graph import Graph, load_graph
from ..outbox import Write
from ..recording import Recording, open_recording, port_channel

BATCH = 64  # entries per round trip when they are due at once
BATCH_BYTES = 32 << 20  # ... or this many bytes of them


@dataclass(frozen=True)
class Target:
    """Where one recorded stream is written in the target graph."""

    instance: str
    key: str
    maxlen: int
    max_bytes: int | None


def _target(graph: Graph, spec: str) -> Target:
    channel = port_channel(graph, spec)
    agent, _, port = spec.rpartition(".")
    node = graph.agents[agent]
    output = node.outputs.get(port)
    if output is not None:
        return Target(channel.stream.instance, channel.stream.key, output.maxlen, output.max_bytes)
    # An input's stream: bounded as its writer in the graph bounds it, if the graph has one.
    source = node.inputs[port].source
    if source is not None:
        written = graph.agents[source[0]].outputs[source[1]]
        return Target(channel.stream.instance, channel.stream.key, written.maxlen, written.max_bytes)
    return Target(channel.stream.instance, channel.stream.key, 10_000, None)


def plan(recording: Recording, graph: Graph, ports: list[str] | None) -> dict[str, Target]:
    """Recorded topic -> target stream. ``ports``: ``A.P`` (replay that recorded port into
    the same port of the target) or ``A.P=B.Q`` (into B.Q); default: every recorded port
    the target graph also has."""
    by_port = {f"{c.agent}.{c.port}": c for c in recording.channels if c.agent}
    mapping: dict[str, Target] = {}
    if ports:
        for spec in ports:
            recorded, _, target = spec.partition("=")
            channel = by_port.get(recorded)
            if channel is None:
                raise RecordingError(f"--ports {spec}: the recording has no port {recorded!r} "
                                     f"(it has {', '.join(sorted(by_port)) or 'none'})")
            mapping[channel.topic] = _target(graph, target or recorded)
        return mapping
    for name, channel in by_port.items():
        agent, _, port = name.rpartition(".")
        node = graph.agents.get(agent)
        if node is not None and (port in node.outputs or port in node.inputs):
            mapping[channel.topic] = _target(graph, name)
    if not mapping:
        raise RecordingError(f"no recorded port ({', '.join(sorted(by_port)) or 'none'}) is a port of graph "
                             f"{graph.name!r}: choose with --ports RECORDED=AGENT.PORT")
    return mapping


class Sender:
    """XADDs pipelined per Redis instance, sent when due or when a batch is full."""

    def __init__(self, clients: dict[str, redis.Redis]):
        self._pipes = {name: client.pipeline(transaction=False) for name, client in clients.items()}
        self._count = 0
        self._bytes = 0

    def add(self, target: Target, fields: dict[bytes, bytes]) -> None:
        bound = Write(target.instance, target.key, target.maxlen, fields, target.max_bytes).bound()
        self._pipes[target.instance].xadd(target.key, fields, maxlen=bound, approximate=True)  # type: ignore[arg-type]
        self._count += 1
        self._bytes += sum(len(v) for v in fields.values())
        if self._count >= BATCH or self._bytes >= BATCH_BYTES:
            self.flush()

    def flush(self) -> None:
        for pipe in self._pipes.values():
            if len(pipe):
                pipe.execute()
        self._count = self._bytes = 0


def replay(recording: Recording, graph: Graph, overrides: dict[str, str], *, speed: float = 1.0,
           ports: list[str] | None = None) -> dict[str, Any]:
    """Write the recorded entries; returns entries per target stream and the time it took."""
    if speed < 0:
        raise ConfigError(f"--speed must be 0 (as fast as possible) or more, not {speed}")
    mapping = plan(recording, graph, ports)
    found = locate.connect(graph, overrides)
    try:
        counts = {f"{t.instance}:{t.key}": 0 for t in mapping.values()}
        sender = Sender({t.instance: found.client(t.instance) for t in mapping.values()})
        started = time.monotonic()
        first: int | None = None
        for entry in recording.entries(list(mapping)):
            target = mapping[entry.channel.topic]
            if first is None:
                first = entry.log_time
            if speed > 0:
                wait = started + (entry.log_time - first) / 1e9 / speed - time.monotonic()
                if wait > 0:
                    sender.flush()  # what is due now goes out before the pause
                    time.sleep(wait)
            sender.add(target, entry.fields)
            counts[f"{target.instance}:{target.key}"] += 1
        sender.flush()
        return {"streams": counts, "seconds": time.monotonic() - started}
    except transport.CONNECTION_ERRORS as exc:
        done = sum(counts.values())
        raise GraphNotRunning(f"graph {graph.name!r} stopped answering during the replay, after {done} "
                              f"entries were queued: {exc}") from exc
    finally:
        found.close()


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser("replay", help="write a recording's entries into a graph's streams")
    parser.add_argument("recording", type=Path, metavar="FILE.mcap")
    parser.add_argument("graph", type=Path)
    parser.add_argument("--speed", type=float, default=1.0,
                        help="1 keeps the recorded timing, 2 twice as fast, 0 as fast as possible (default: 1)")
    parser.add_argument("--ports", nargs="+", metavar="AGENT.PORT[=AGENT.PORT]",
                        help="the recorded ports to replay, each into the same port of GRAPH or the one after '=' "
                             "(default: every recorded port GRAPH has)")
    add_redis_option(parser)
    parser.set_defaults(func=cmd_replay)


def cmd_replay(args: argparse.Namespace) -> int:
    recording = open_recording(args.recording)
    if not recording.complete:
        print(f"graphrun: {args.recording} has no summary (its recorder was cut short): replaying what it holds "
              "up to the cut, each stream in its order", file=sys.stderr)
    graph = load_graph(args.graph)
    figures = replay(recording, graph, dict(args.redis), speed=args.speed, ports=args.ports)
    for topic, count in figures["streams"].items():
        print(f"{topic}: {count} entries")
    total = sum(figures["streams"].values())
    print(f"replayed {total} entries of {args.recording} in {figures['seconds']:.1f} s")
    return 0

