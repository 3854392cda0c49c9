"""Following a stream as an observer: plain XREAD, never a consumer group.

Commands that watch a running graph (``echo``, ``hz``) read this way, so they create no
group, leave no pending entry and move no group's last-delivered id: an observer
disturbs nothing the agents rely on.
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import redis

from . import locate
from .errors import ConfigError, GraphNotRunning
from .graph import StreamRef, load_graph
from .transport import CONNECTION_ERRORS, Entry, parse_read

BLOCK_MS = 500  # below the observer client's socket timeout, and short enough to stop promptly
READ_COUNT = 100


@contextmanager
def watching(graph_file: str | os.PathLike[str], port: str,
             overrides: Mapping[str, str]) -> Iterator[tuple[redis.Redis, StreamRef]]:
    """A client for the stream of ``AGENT.PORT`` of a running graph, and the stream.

    Raises UnknownPort or GraphNotRunning before yielding, and GraphNotRunning when the
    Redis instance goes away during the watch; Ctrl-C inside the block ends the watch
    quietly, as the end a person watching chose.
    """
    graph = load_graph(graph_file)
    ref = locate.port_stream(graph, port)
    found = locate.running(graph, overrides)
    try:
        yield found.client(ref.instance), ref
    except KeyboardInterrupt:
        pass
    except CONNECTION_ERRORS as exc:
        raise GraphNotRunning(f"graph {graph.name!r} stopped: Redis instance {ref.instance!r} "
                              f"no longer answers ({exc})") from exc
    finally:
        found.close()


def positive(text: str) -> int:
    """An argparse type: a count of at least 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return value


def entry_id(text: str) -> str:
    """``text`` if it is a stream entry id (``1700000000000-0``, or just milliseconds)."""
    if not re.fullmatch(r"\d+(-\d+)?", text):
        raise ConfigError(f"{text!r} is not a stream entry id (expected MILLISECONDS-SEQUENCE, like 1700000000000-0)")
    return text


def last_id(client: redis.Redis, key: str) -> str:
    """The id of the newest entry ever added to ``key`` ("0-0" when it does not exist).

    Resolved once instead of passing ``$`` to every XREAD: with ``$`` an entry added
    between two reads would be skipped.
    """
    try:
        info = client.xinfo_stream(key)
    except redis.ResponseError:  # no such key yet
        return "0-0"
    last = info["last-generated-id"]
    return last.decode() if isinstance(last, bytes) else str(last)


def latest(client: redis.Redis, key: str, count: int) -> list[Entry]:
    """The last ``count`` entries of ``key``, oldest first."""
    if count <= 0:
        return []
    reply = client.xrevrange(key, count=count)
    return [Entry(key, i.decode(), fields) for i, fields in reversed(reply)]


def follow(client: redis.Redis, key: str, after: str) -> Iterator[list[Entry]]:
    """Batches of entries added to ``key`` after id ``after``, as they come.

    Yields an empty batch whenever ``BLOCK_MS`` passes without one, so a caller can print
    or stop on time without a thread of its own.
    """
    position = after
    while True:
        entries = parse_read(client.xread({key: position}, count=READ_COUNT, block=BLOCK_MS))
        if entries:
            position = entries[-1].id
        yield entries
