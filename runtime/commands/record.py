"""``graphrun record GRAPH -o FILE.mcap``: a running graph's streams, entry by entry, to MCAP.

The recorder is one more reader of Redis, and one that changes nothing: it reads with
plain XREAD from the position it remembers, never through a consumer group, so it
leaves no pending entries, no group to trim for, and never blocks a writer. Each Redis
instance is read by a thread of its own. When it stops, it reads each stream up to the
last entry written at that moment and compares what it recorded with Redis's own count
of entries added meanwhile (Redis 7), so entries trimmed before the recorder read them
are counted and reported, never missed silently.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from .. import codec, locate, signals, transport
from ..cli import add_redis_option
from ..errors import GraphNotRunning
from ..graph import Graph, StreamRef, load_graph
from ..recording import (
    COMPRESSION,
    DEFAULT_COMPRESSION,
    Channel,
    RecordingWriter,
    output_channels,
    port_channel,
)

BLOCK_MS = 200  # an XREAD waits this long for new entries: how soon a stop is noticed
COUNT = 8  # entries per XREAD and stream: a few frames, a reply of some megabytes at most


@dataclass
class Position:
    """Where the recorder is in one stream, and Redis's count of entries added when it began."""

    last_id: bytes
    added_at_start: int | None
    recorded: int = 0
    missed: int | None = None


def _stream_info(client: redis.Redis, key: str) -> tuple[bytes, int | None]:
    """(last id generated, entries added ever) of a stream; ("0-0", 0) when it does not exist yet."""
    try:
        info = client.xinfo_stream(key)
    except redis.ResponseError:
        return b"0-0", 0
    last = info.get("last-generated-id", b"0-0")
    added = info.get("entries-added")  # Redis 7; None before
    return (last if isinstance(last, bytes) else str(last).encode()), (None if added is None else int(added))


class InstanceRecorder(threading.Thread):
    """Reads the chosen streams of one Redis instance from now on, until told to stop."""

    def __init__(self, instance: str, client: redis.Redis, keys: list[str], writer: RecordingWriter,
                 stop: threading.Event):
        super().__init__(name=f"record-{instance}", daemon=True)
        self.instance = instance
        self._client = client
        self._writer = writer
        self._stopping = stop
        self.error: BaseException | None = None
        self.positions: dict[str, Position] = {}
        for key in keys:  # taken before the thread starts: the recording begins at the same moment everywhere
            last, added = _stream_info(client, key)
            self.positions[key] = Position(last, added)

    def run(self) -> None:
        try:
            while not self._stopping.is_set():
                self._read({key: p.last_id for key, p in self.positions.items()}, block=BLOCK_MS)
            self._finish()
        except (*transport.CONNECTION_ERRORS, redis.ResponseError) as exc:
            self.error = exc
            self._stopping.set()

    def _read(self, ids: dict[str, bytes], *, block: int | None) -> int:
        reply = self._client.xread(ids, count=COUNT, block=block)  # type: ignore[arg-type]
        got = 0
        for raw_key, entries in reply or ():
            key = raw_key.decode() if isinstance(raw_key, bytes) else raw_key
            self._keep(key, entries)
            got += len(entries)
        return got

    def _keep(self, key: str, entries: list[tuple[bytes, dict[bytes, bytes]]]) -> None:
        position = self.positions[key]
        stream = StreamRef(self.instance, key)
        for entry_id, fields in entries:
            self._writer.add(stream, entry_id, codec.inline_frames(fields))  # frames outlive their slots
            position.last_id = entry_id
            position.recorded += 1

    def _finish(self) -> None:
        """Read each stream up to its last entry now, then count what was trimmed unread."""
        for key, position in self.positions.items():
            end, added = _stream_info(self._client, key)
            while transport.id_tuple(position.last_id) < transport.id_tuple(end):
                entries = self._client.xrange(key, min=b"(" + position.last_id, max=end, count=COUNT)
                if not entries:
                    break
                self._keep(key, entries)
            if added is not None and position.added_at_start is not None:
                position.missed = max(0, added - position.added_at_start - position.recorded)


@contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """Ctrl-C and SIGTERM end the recording cleanly: the file gets its summary and indexes."""
    with signals.calling_on(lambda _signum: stop.set()):
        yield


def choose_channels(graph: Graph, ports: list[str] | None) -> list[Channel]:
    """The channels ``--ports`` names (each stream once), or every output stream of the graph."""
    chosen = [port_channel(graph, spec) for spec in ports] if ports else output_channels(graph)
    unique: dict[StreamRef, Channel] = {}
    for channel in chosen:
        unique.setdefault(channel.stream, channel)
    return list(unique.values())


def record(graph: Graph, overrides: dict[str, str], output: Path, *, ports: list[str] | None = None,
           duration: float | None = None, compression: str = DEFAULT_COMPRESSION) -> dict[str, Any]:
    """Record until ``duration`` passes or a signal comes; returns the figures it prints."""
    channels = choose_channels(graph, ports)
    found = locate.running(graph, overrides)
    try:
        by_instance: dict[str, list[str]] = {}
        for channel in channels:
            found.client(channel.stream.instance)  # GraphNotRunning names an instance that does not answer
            by_instance.setdefault(channel.stream.instance, []).append(channel.stream.key)
        writer = RecordingWriter(output, graph, channels, compression=compression)
        stop = threading.Event()
        cpu, started = time.process_time(), time.monotonic()
        try:
            try:
                readers = [InstanceRecorder(i, found.client(i), keys, writer, stop) for i, keys in by_instance.items()]
            except transport.CONNECTION_ERRORS as exc:
                raise GraphNotRunning(f"graph {graph.name!r} stopped answering as the recording began: {exc}") from exc
            with _stop_on_signals(stop):
                for reader in readers:
                    reader.start()
                stop.wait(duration)
                stop.set()
                for reader in readers:
                    reader.join()
        finally:
            writer.close()
        elapsed, cpu = time.monotonic() - started, time.process_time() - cpu
    finally:
        found.close()
    failed = [r for r in readers if r.error is not None]
    if failed:
        why = "; ".join(f"{r.instance}: {r.error}" for r in failed)
        raise GraphNotRunning(f"recording stopped after {elapsed:.1f} s: {why} "
                              f"({writer.messages} entries up to then are in {output})")
    streams = {f"{r.instance}:{key}": (p.recorded, p.missed) for r in readers for key, p in r.positions.items()}
    return {"streams": streams, "entries": writer.messages, "seconds": elapsed, "cpu_seconds": cpu,
            "bytes": output.stat().st_size}


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser("record", help="record a running graph's streams to an MCAP file")
    parser.add_argument("graph", type=Path)
    parser.add_argument("-o", "--output", type=Path, required=True, metavar="FILE.mcap")
    parser.add_argument("--ports", nargs="+", metavar="AGENT.PORT",
                        help="the streams to record (default: every output stream of the graph)")
    parser.add_argument("--duration", type=float, metavar="S", help="stop after this many seconds (default: Ctrl-C)")
    parser.add_argument("--compression", choices=sorted(COMPRESSION), default=DEFAULT_COMPRESSION,
                        help="of the MCAP chunks: zstd makes frames ~40%% smaller for ~10x the recorder's CPU "
                             "(default: none)")
    add_redis_option(parser)
    parser.set_defaults(func=cmd_record)


def cmd_record(args: argparse.Namespace) -> int:
    graph = load_graph(args.graph)
    figures = record(graph, dict(args.redis), args.output, ports=args.ports, duration=args.duration,
                     compression=args.compression)
    missed_any = False
    for topic, (recorded, missed) in figures["streams"].items():
        note = "" if missed is None else f", {missed} trimmed before the recorder read them"
        missed_any = missed_any or bool(missed)
        print(f"{topic}: {recorded} entries{note}")
    entries = figures["entries"]
    per_entry = f", {1000 * figures['cpu_seconds'] / entries:.2f} ms per entry" if entries else ""
    print(f"recorded {entries} entries in {figures['seconds']:.1f} s to {args.output} "
          f"({figures['bytes'] / 1e6:.1f} MB); recorder CPU {figures['cpu_seconds']:.2f} s{per_entry}")
    if missed_any:
        print("graphrun: some entries were trimmed before the recorder read them: the recording has gaps",
              file=sys.stderr)
    return 0
