"""Recordings of a graph's streams as MCAP files: the layout, writing and reading.

MCAP is the open container format of rosbag2 and Foxglove, so a recording can be
inspected, sliced and merged with the tools that already exist for it. graphrun keeps
each stream entry exactly as Redis held it (the JSON header ``h`` and the raw array
fields ``b0``, ``b1``…), so replaying a recording writes the same bytes again.

The layout (README.md, "Recording and replay"):

- one channel per stream, topic ``<instance>:<stream key>``, message encoding
  ``graphrun-entry``, no schema (the entry describes itself); channel metadata
  ``graph``, ``agent``, ``port``, ``instance``, ``stream`` and ``type`` (the port's
  message type);
- a message per stream entry: ``log_time`` is the entry id's milliseconds in
  nanoseconds plus its sequence number (ids stay in order within one millisecond),
  ``publish_time`` the envelope's origin time ``t0`` in nanoseconds (``log_time`` when
  the entry has no readable envelope), ``sequence`` the entry's number on its channel;
- the data: the entry id, then the fields in Redis's order, all little-endian::

      u32 id length, id (ASCII, "1733140000000-0")
      u32 field count N
      N times: u32 name length, name, u32 value length, value

- a metadata record ``graphrun.graph`` (the graph as JSON: name, file, Redis
  instances, agents with their types and ports) and the graph file as an attachment.
"""

from __future__ import annotations

import json
import struct
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from mcap.exceptions import McapError
from mcap.reader import NonSeekingReader, make_reader
from mcap.records import Channel as McapChannel
from mcap.records import Metadata
from mcap.stream_reader import StreamReader
from mcap.writer import CompressionType, Writer

from . import __version__
from .errors import ConfigError, RecordingError
from .graph import Graph, StreamRef
from .locate import port_stream
from .ports import declared_ports
from .transport import id_tuple

ENCODING = "graphrun-entry"
PROFILE = "graphrun"
GRAPH_METADATA = "graphrun.graph"
LAYOUT_VERSION = "1"
COMPRESSION = {"zstd": CompressionType.ZSTD, "lz4": CompressionType.LZ4, "none": CompressionType.NONE}
# A chunk is closed once past this size, so a frame makes a chunk of its own: the MCAP
# writer's chunk buffer then never grows by copying (4 MiB chunks cost a frame ~3 ms of CPU,
# 64 KiB ones ~1 ms), and small entries still share chunks and their indexes.
CHUNK_SIZE = 64 << 10
# Compressing frames costs the recorder far more than writing them: a 1.3 MB synthetic
# frame takes ~1 ms uncompressed, ~3 ms with lz4 (4 % smaller), ~13 ms with zstd (40 % smaller).
DEFAULT_COMPRESSION = "none"

_U32 = struct.Struct("<I")


# --- one entry --------------------------------------------------------------------------


def pack_entry(entry_id: bytes, fields: Mapping[bytes, bytes]) -> bytes:
    """The ``graphrun-entry`` bytes of one stream entry: its id and its fields in order."""
    parts = [_U32.pack(len(entry_id)), entry_id, _U32.pack(len(fields))]
    for name, value in fields.items():
        parts += (_U32.pack(len(name)), name, _U32.pack(len(value)), value)
    return b"".join(parts)


def unpack_entry(data: bytes) -> tuple[str, dict[bytes, bytes]]:
    """The entry id and fields of ``graphrun-entry`` bytes; RecordingError when they are cut short."""
    view = memoryview(data)
    pos = 0

    def take() -> bytes:
        nonlocal pos
        if pos + 4 > len(view):
            raise RecordingError(f"entry is truncated at byte {pos} of {len(view)}")
        (size,) = _U32.unpack_from(view, pos)
        end = pos + 4 + size
        if end > len(view):
            raise RecordingError(f"entry is truncated: a {size}-byte value at byte {pos} of {len(view)}")
        value = bytes(view[pos + 4:end])
        pos = end
        return value

    entry_id = take().decode("ascii", errors="replace")
    if pos + 4 > len(view):
        raise RecordingError("entry is truncated before its field count")
    (count,) = _U32.unpack_from(view, pos)
    pos += 4
    fields: dict[bytes, bytes] = {}
    for _ in range(count):
        name = take()
        fields[name] = take()
    return entry_id, fields


def id_time(entry_id: bytes | str) -> int:
    """An entry id as nanoseconds: its milliseconds, plus its sequence as a tie-break."""
    ms, seq = id_tuple(entry_id)
    return ms * 1_000_000 + min(seq, 999_999)


def origin_time(fields: Mapping[bytes, bytes]) -> int | None:
    """The envelope's ``t0`` in nanoseconds, or None when the header is not a readable envelope."""
    try:
        return int(float(json.loads(fields[b"h"])["t0"]) * 1e9)
    except (KeyError, TypeError, ValueError):
        return None


# --- the graph, described for other tools -----------------------------------------------


@dataclass(frozen=True)
class Channel:
    """A recorded stream: where it was and which port of which agent wrote or read it."""

    stream: StreamRef
    agent: str = ""
    port: str = ""
    type: str = ""

    @property
    def topic(self) -> str:
        return f"{self.stream.instance}:{self.stream.key}"


def port_channel(graph: Graph, spec: str) -> Channel:
    """The stream of ``AGENT.PORT`` (an output, or the stream an input reads) as a channel."""
    stream = port_stream(graph, spec)  # UnknownPort for a typo, naming what exists
    agent, _, port = spec.rpartition(".")
    return Channel(stream, agent=agent, port=port, type=message_type(graph, agent, port))


def output_channels(graph: Graph) -> list[Channel]:
    """Every output stream of the graph: what a recording holds unless told otherwise."""
    return [port_channel(graph, f"{agent}.{port}") for agent, node in graph.agents.items() for port in node.outputs]


def message_type(graph: Graph, agent: str, port: str) -> str:
    """The qualified name of the message type an agent's port declares ("" for any)."""
    node = graph.agents[agent]
    declared = declared_ports(node.agent_class)
    group = next((g for g, names in node.groups.items() if port in names), port)
    found = declared.get(port) or declared.get(group)
    kind = found.type if found is not None else None
    return f"{kind.__module__}.{kind.__qualname__}" if kind is not None else ""


def describe_graph(graph: Graph) -> dict[str, Any]:
    """The graph as plain JSON: enough for a tool to map topics back to agents and ports."""
    agents = {}
    for name, node in graph.agents.items():
        agents[name] = {
            "type": node.type,
            "node": node.node,
            "replicas": node.replicas,
            "outputs": {p: {"stream": str(b.stream), "maxlen": b.maxlen, "message_type": message_type(graph, name, p)}
                        for p, b in node.outputs.items()},
            "inputs": {p: {"stream": str(b.stream), "from": ".".join(b.source) if b.source else None,
                           "message_type": message_type(graph, name, p)}
                       for p, b in node.inputs.items()},
        }
    return {"name": graph.name, "file": str(graph.file), "description": graph.description,
            "redis": list(graph.redis), "agents": agents}


# --- writing ------------------------------------------------------------------------------


class RecordingWriter:
    """An MCAP file being written; ``add`` may be called from several reader threads."""

    def __init__(self, path: Path, graph: Graph, channels: Sequence[Channel], *,
                 compression: str = DEFAULT_COMPRESSION):
        if compression not in COMPRESSION:
            raise ConfigError(f"unknown compression {compression!r} (choose {', '.join(COMPRESSION)})")
        self.path = path
        try:
            self._file: IO[bytes] = open(path, "wb")  # noqa: SIM115 - closed in close()
        except OSError as exc:
            raise ConfigError(f"cannot write the recording {path}: {exc}") from exc
        self._writer = Writer(self._file, chunk_size=CHUNK_SIZE, compression=COMPRESSION[compression])
        self._lock = threading.Lock()
        self._writer.start(profile=PROFILE, library=f"graphrun {__version__}")
        self._writer.add_metadata(GRAPH_METADATA, {"layout": LAYOUT_VERSION, "encoding": ENCODING,
                                                   "graph": json.dumps(describe_graph(graph))})
        graph_file = Path(graph.file)
        if graph_file.is_file():
            now = time.time_ns()
            self._writer.add_attachment(now, now, graph_file.name, "application/yaml", graph_file.read_bytes())
        self._ids: dict[StreamRef, int] = {}
        self._sequence: dict[StreamRef, int] = {}
        for channel in channels:
            self._ids[channel.stream] = self._writer.register_channel(
                topic=channel.topic, message_encoding=ENCODING, schema_id=0,
                metadata={"graph": graph.name, "agent": channel.agent, "port": channel.port,
                          "instance": channel.stream.instance, "stream": channel.stream.key, "type": channel.type})
            self._sequence[channel.stream] = 0
        self.messages = 0

    def add(self, stream: StreamRef, entry_id: bytes, fields: Mapping[bytes, bytes]) -> None:
        """Append one entry read from ``stream`` (its bytes packed before the lock is taken)."""
        data = pack_entry(entry_id, fields)
        log_time = id_time(entry_id)
        publish_time = origin_time(fields) or log_time
        with self._lock:
            sequence = self._sequence[stream]
            self._sequence[stream] = sequence + 1
            self._writer.add_message(self._ids[stream], log_time=log_time, data=data,
                                     publish_time=publish_time, sequence=sequence)
            self.messages += 1

    def close(self) -> None:
        """Write the summary (channel counts, indexes) and close the file."""
        with self._lock:
            self._writer.finish()
            self._file.close()


# --- reading ------------------------------------------------------------------------------


@dataclass(frozen=True)
class RecordedEntry:
    channel: Channel
    id: str
    fields: dict[bytes, bytes]
    log_time: int  # ns


@dataclass
class Recording:
    """A graphrun recording opened for reading: its channels and the graph it came from.

    ``complete`` is False for a file whose recorder was killed before it wrote the
    summary (power lost, kill -9): its entries are still read, in file order (each
    stream's own order; streams interleaved as they were read), up to where it was cut.
    """

    path: Path
    channels: list[Channel]
    graph: dict[str, Any]
    complete: bool = True

    def entries(self, topics: Sequence[str] | None = None) -> Iterator[RecordedEntry]:
        """The entries of ``topics`` (default: all), in time order across channels when complete."""
        by_topic = {c.topic: c for c in self.channels}
        with open(self.path, "rb") as file:
            if self.complete:
                messages = make_reader(file).iter_messages(topics=topics, log_time_order=True)
            else:
                messages = NonSeekingReader(file).iter_messages(topics=topics, log_time_order=False)
            try:
                for _, channel, message in messages:
                    if channel.message_encoding != ENCODING:
                        continue
                    entry_id, fields = unpack_entry(message.data)
                    yield RecordedEntry(by_topic[channel.topic], entry_id, fields, message.log_time)
            except McapError as exc:
                if self.complete:
                    raise RecordingError(f"{self.path}: not a readable MCAP file: {exc}") from exc
                # else: the end of what a recorder that was cut short wrote


def _channel(record: McapChannel) -> Channel | None:
    if record.message_encoding != ENCODING:
        return None
    meta = record.metadata
    instance, _, key = record.topic.partition(":")
    return Channel(StreamRef(meta.get("instance", instance), meta.get("stream", key)),
                   agent=meta.get("agent", ""), port=meta.get("port", ""), type=meta.get("type", ""))


def _graph(record: Metadata) -> dict[str, Any] | None:
    return json.loads(record.metadata.get("graph", "{}")) if record.name == GRAPH_METADATA else None


def _indexed(path: Path) -> Recording | None:
    """The recording as its summary describes it; None when it has no readable summary."""
    with open(path, "rb") as file:
        reader = make_reader(file)
        try:
            summary = reader.get_summary()
        except McapError:
            return None
        if summary is None:
            return None
        graph = next(filter(None, (_graph(m) for m in reader.iter_metadata())), {})
    channels = [c for c in map(_channel, summary.channels.values()) if c is not None]
    return Recording(path, channels, graph)


def _scanned(path: Path) -> Recording:
    """The recording as a pass over its records finds it: for a file without a summary."""
    channels: dict[str, Channel] = {}
    graph: dict[str, Any] = {}
    with open(path, "rb") as file:
        try:
            for record in StreamReader(file).records:
                if isinstance(record, McapChannel) and (channel := _channel(record)) is not None:
                    channels.setdefault(channel.topic, channel)
                elif isinstance(record, Metadata):
                    graph = _graph(record) or graph
        except McapError as exc:
            if not channels:
                raise RecordingError(f"{path}: not a readable MCAP file: {exc}") from exc
    return Recording(path, list(channels.values()), graph, complete=False)


def open_recording(path: Path) -> Recording:
    """A recording's channels and graph description; RecordingError for anything else."""
    try:
        recording = _indexed(path) or _scanned(path)
    except OSError as exc:
        raise RecordingError(f"cannot read the recording {path}: {exc}") from exc
    except (McapError, ValueError) as exc:
        raise RecordingError(f"{path}: not a readable MCAP file: {exc}") from exc
    if not recording.channels:
        raise RecordingError(f"{path}: no channel with message encoding {ENCODING!r}: not a graphrun recording")
    return recording
