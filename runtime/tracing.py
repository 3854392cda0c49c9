"""Everything a running graph knows of one indexed value (one part): its messages, in order.

Reading goes through the index only (``index``): per Redis instance one LRANGE of the
value's list, then one XRANGE of exactly one entry id per message, in one pipeline. The
cost depends on how many messages carry the value, never on how long the streams are.
A message the index names but its stream no longer holds (the stream's length bound
trimmed it) is kept in the trace as trimmed, so a gap in the audit trail is visible. A
message an agent gave up on is indexed in its dead-letter stream too, with why.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from . import codec, index
from .errors import MessageFormatError, NotIndexed
from .graph import Graph, StreamRef
from .locate import RunningGraph
from .message import Message
from .transport import id_tuple


@dataclass(frozen=True)
class Traced:
    """One message of the trace: where it was written, by which port, and what it said."""

    at: index.IndexedAt
    writer: str | None  # "agent.port" of the graph writing the stream, when there is one
    message: Message | None  # None: trimmed from its stream (or unreadable: ``problem``)
    problem: str | None = None
    dead: dict[str, str] = dataclasses.field(default_factory=dict)  # a dead letter's dl:* fields (error, agent…)

    @property
    def written(self) -> float:
        """When Redis appended the entry (its id's milliseconds), seconds since the epoch."""
        return int(self.at.entry_id.partition("-")[0]) / 1000.0


def writers(graph: Graph) -> dict[StreamRef, str]:
    """Each output stream of the graph with the ``agent.port`` writing it, and each dead-letter
    stream with the input whose messages it takes."""
    found = {b.dead_letter: f"{node.name}.{port} (dead letter)" for node in graph.agents.values()
             for port, b in node.inputs.items()}
    found.update({b.stream: f"{node.name}.{port}" for node in graph.agents.values() for port, b in node.outputs.items()})
    return found


def trace(found: RunningGraph, field: str, value: str) -> list[Traced]:
    """The messages whose ``field`` was ``value``, oldest write first.

    Raises NotIndexed when no reachable instance has an index entry for the value.
    """
    graph = found.graph
    key = index.key(graph.name, field, value)
    located = index.lookup(found.clients, key)
    if not located:
        unreachable = "".join(f"; instance {i} did not answer: {why}" for i, why in found.unreachable.items())
        raise NotIndexed(f"graph {graph.name!r} has no message with {field} {value}: none was written, or its index "
                         f"entry expired ({index.DEFAULT_TTL} s after the last message, unless the graph sets "
                         f"index_ttl){unreachable}")
    by_writer = writers(graph)
    traced: list[Traced] = []
    for instance, client in found.clients.items():
        here = [at for at in located if at.instance == instance]
        if not here:
            continue
        pipe = client.pipeline(transaction=False)
        for at in here:
            pipe.xrange(at.stream, at.entry_id, at.entry_id)
        for at, entries in zip(here, pipe.execute()):
            writer = by_writer.get(StreamRef(instance, at.stream))
            if not entries:
                traced.append(Traced(at, writer, None))
                continue
            fields = entries[0][1]
            dead = {k[3:].decode(): v.decode(errors="replace") for k, v in fields.items() if k.startswith(b"dl:")}
            try:
                traced.append(Traced(at, writer, codec.decode(fields), dead=dead))
            except MessageFormatError as exc:
                traced.append(Traced(at, writer, None, f"unreadable: {exc}", dead))
    traced.sort(key=lambda t: (t.written, id_tuple(t.at.entry_id)))
    return traced
