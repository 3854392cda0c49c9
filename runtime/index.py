"""The message index: where every message carrying a given key value was written.

An output port names one payload field as its index field (``part_id`` unless the port
or the graph says otherwise). Each message written with that field gets an entry in a
Redis list on the same instance as its stream::

    graphrun:index:<graph>:<field>:<value>  ->  ["<stream> <entry id>", ...]

So finding every message of one value (one part) costs one LRANGE per instance and one
XRANGE per message, however long the streams are. The runtime knows nothing of what
the field means. A list lives ``ttl`` seconds after its last write and keeps at most
``MAX_ENTRIES``; the streams it points into are bounded on their own (maxlen), so an
entry may outlive the message it names: readers report that message as trimmed.

The entry id exists only once Redis has appended the entry, so the outbox writes the
index entries in the transaction of the acknowledgements that follow the outputs: a
message acknowledged has its outputs indexed, and a crash in between makes its input
be handled again, outputs and index entries included. (A Lua script appending and
indexing in one call would copy each entry twice more inside Redis: for a 1.3 MB frame
it took 4.5 times as long as the XADD alone.)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import redis

PREFIX = "graphrun:index:"
DEFAULT_FIELD = "part_id"
DEFAULT_TTL = 86_400  # seconds: a day of history, longer than the line's verdict streams hold
MAX_ENTRIES = 1_000  # per value: a value written by a runaway producer stays bounded


@dataclass(frozen=True, slots=True)
class IndexedAt:
    """Where one indexed message was written."""

    instance: str
    stream: str
    entry_id: str


def key(graph: str, field: str, value: Any) -> str:
    """The index list of one value of one field in one graph."""
    return f"{PREFIX}{graph}:{field}:{value}"


def key_of(graph: str, field: str | None, payload: Mapping[str, Any]) -> str | None:
    """The index list a payload is entered in, or None when it does not carry ``field``."""
    if field is None:
        return None
    value = payload.get(field)
    if value is None or isinstance(value, (dict, list)):
        return None
    return key(graph, field, value)


def commands(index_key: str, stream: str, entry_id: bytes | str, ttl: int) -> list[tuple[Any, ...]]:
    """The commands entering one stream entry in ``index_key``: append, bound, keep ``ttl`` s."""
    if isinstance(entry_id, bytes):
        entry_id = entry_id.decode()
    return [("RPUSH", index_key, f"{stream} {entry_id}"), ("LTRIM", index_key, -MAX_ENTRIES, -1),
            ("EXPIRE", index_key, ttl)]


def lookup(clients: Mapping[str, redis.Redis], index_key: str) -> list[IndexedAt]:
    """Every entry of ``index_key`` on the given instances, in the order each was written."""
    found: list[IndexedAt] = []
    for instance, client in clients.items():
        for raw in client.lrange(index_key, 0, -1):
            stream, _, entry_id = raw.decode().rpartition(" ")
            found.append(IndexedAt(instance, stream, entry_id))
    return found
