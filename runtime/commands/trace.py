"""``graphrun trace GRAPH PART_ID``: everything the graph knows of one part, in order.

The audit trail of one part: every message written with its id (the trigger, each
camera's frame, each verdict, what the PLC was given), with the port that wrote it,
its stream entry id, its payload (arrays as dtype, shape and range) and the path it
took: for each agent on the way, how long the message waited before that agent took
it and how long the agent took. It reads the graph's index, never a whole stream
(``graphrun.tracing``), so it answers as fast on a stream of millions of entries.
Messages the index names but their streams have trimmed are listed as trimmed.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from .. import index, locate
from ..cli import add_redis_option
from ..graph import Graph, load_graph
from ..message import Message
from ..summary import format_age, payload_text, summarize
from ..tracing import Traced, trace


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser("trace", help="everything the graph knows of one part: frames, verdicts, PLC write")
    parser.add_argument("graph", type=Path)
    parser.add_argument("part_id", metavar="PART_ID", help="the value to trace (of the field --field names)")
    parser.add_argument("--field", default=index.DEFAULT_FIELD,
                        help=f"the indexed payload field (default {index.DEFAULT_FIELD})")
    parser.add_argument("--json", action="store_true", help="one JSON document: the messages, oldest first")
    add_redis_option(parser)
    parser.set_defaults(func=cmd_trace)


def cmd_trace(args: argparse.Namespace) -> int:
    graph = load_graph(args.graph)
    found = locate.connect(graph, dict(args.redis))
    try:
        traced = trace(found, args.field, args.part_id)
    finally:
        found.close()
    if args.json:
        print(json.dumps([as_record(t) for t in traced], indent=1, default=str))
        return 0
    print(f"graph {graph.name}, {args.field} {args.part_id}: {len(traced)} message(s)")
    for t in traced:
        print("\n".join(lines(graph, t)))
    return 0


def clock(seconds: float) -> str:
    """``14:02:11.123`` local time: the trail of one part spans seconds, not days."""
    return time.strftime("%H:%M:%S", time.localtime(seconds)) + f".{int(seconds * 1000) % 1000:03d}"


def path_steps(message: Message) -> list[dict[str, Any]]:
    """Each agent on the message's path: how long the message waited for it, how long it took."""
    steps = []
    previous = message.created
    for hop in message.hops:
        steps.append({"agent": hop.agent, "received": hop.received, "sent": hop.sent,
                      "waited_ms": round((hop.received - previous) * 1000, 3),
                      "took_ms": round((hop.sent - hop.received) * 1000, 3)})
        previous = hop.sent
    return steps


def path_text(message: Message) -> str:
    """``made 14:02:11.120 → cam_front after 5.1 ms, took 40.2 ms → …``"""
    parts = [f"made {clock(message.created)}" + (f" by {message.producer}" if not message.hops else "")]
    for step in path_steps(message):
        parts.append(f"{step['agent']} after {format_age(step['waited_ms'] / 1000)}, "
                     f"took {format_age(step['took_ms'] / 1000)}")
    if message.hops:
        parts.append(f"{format_age(message.hops[-1].sent - message.created)} from origin to this message")
    return " → ".join(parts)


def bound(graph: Graph, t: Traced) -> str:
    """The stream's length bound, for a trimmed message: why it is gone."""
    agent, _, port = (t.writer or "").partition(".")
    binding = graph.agents[agent].outputs.get(port) if agent in graph.agents else None
    return f" (the stream keeps about {binding.maxlen} entries)" if binding is not None else ""


def lines(graph: Graph, t: Traced) -> list[str]:
    head = f"{clock(t.written)} {t.writer or '?'}  {t.at.instance}:{t.at.stream} {t.at.entry_id}"
    if t.message is None:
        return [head, f"    {t.problem or 'trimmed: no longer in its stream' + bound(graph, t)}"]
    dead = [f"    dead letter: {t.dead.get('error', '?')} (agent {t.dead.get('agent', '?')})"] if t.dead else []
    return [head, *dead, f"    path: {path_text(t.message)}", f"    {payload_text(t.message)}"]


def as_record(t: Traced) -> dict[str, Any]:
    """One message of the trace as JSON values (arrays described, not copied)."""
    record: dict[str, Any] = {"instance": t.at.instance, "stream": t.at.stream, "entry_id": t.at.entry_id,
                              "writer": t.writer, "written": t.written, "trimmed": t.message is None and not t.problem}
    if t.problem:
        record["problem"] = t.problem
    if t.dead:
        record["dead_letter"] = t.dead
    if t.message is not None:
        record.update(id=t.message.id, producer=t.message.producer, created=t.message.created,
                      path=path_steps(t.message), payload=summarize(t.message.payload))
    return record
