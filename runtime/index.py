"""The message index: where every message carrying a given key value was written.

An output port names one payload field as its index field (``part_id`` unless the port
or the graph says otherwise). Each message written with that field gets an entry in a
Redis list on the same instance as its stream, written in the same MULTI/EXEC as the
message itself::

    graphrun:index:<graph>:<field>:<value>  ->  ["<stream> <entry id>", ...]

So finding every message of one value (one part) costs one LRANGE per instance and one
XRANGE per message, however long the streams are. The runtime knows nothing of what
the field means. A list lives ``ttl`` seconds after its last write and keeps at most
``MAX_ENTRIES``; the streams it points into are bounded on their own (maxlen), so an
entry may outlive the message it names: readers report that message as trimmed.

The entry id is known only once Redis has appended the entry, so the append and the
index write run as one Lua script. Its ``#!lua`` line (no ``allow-oom`` flag) makes a
full Redis refuse the whole script before the transaction runs, as it refuses a plain
XADD: an acknowledgement never goes through without the output before it.
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

# KEYS: stream, index list. ARGV: length bound, stream key, ttl, max entries, then the fields.
XADD_INDEXED = """#!lua
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', unpack(ARGV, 5))
redis.call('RPUSH', KEYS[2], ARGV[2] .. ' ' .. id)
redis.call('LTRIM', KEYS[2], -tonumber(ARGV[4]), -1)
redis.call('EXPIRE', KEYS[2], ARGV[3])
return id
"""


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


def xadd_command(stream: str, bound: int, flat_fields: list[Any], index_key: str, ttl: int) -> tuple[Any, ...]:
    """The command appending an entry to ``stream`` and entering it in ``index_key``."""
    return ("EVAL", XADD_INDEXED, 2, stream, index_key, bound, stream, ttl, MAX_ENTRIES, *flat_fields)


def lookup(clients: Mapping[str, redis.Redis], index_key: str) -> list[IndexedAt]:
    """Every entry of ``index_key`` on the given instances, in the order each was written."""
    found: list[IndexedAt] = []
    for instance, client in clients.items():
        for raw in client.lrange(index_key, 0, -1):
            stream, _, entry_id = raw.decode().rpartition(" ")
            found.append(IndexedAt(instance, stream, entry_id))
    return found
