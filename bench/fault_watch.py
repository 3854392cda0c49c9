"""Watching the line's streams during a fault run, for ``bench/faults.py``.

Why poll during the run rather than read the streams at the end: frame streams are short
(``maxlen``) and may live in a Redis without persistence, so a killed server takes its
frames with it; what was sent must be seen while it is there. Frames are megabytes, so
the watcher reads through a server-side script that returns only the small fields of each
entry (the JSON header, the dead-letter fields), never the image bytes: watching costs the
line a few kilobytes per frame, not a second copy of every image.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
from graphrun import Graph

POLL = 0.2  # seconds between rounds; a 50-frame stream at 4 fps holds 12 s
PAGE = 200  # entries per script call
SMALL = 16 << 10  # fields longer than this (array buffers) are not returned

# XRANGE from ARGV[1], COUNT ARGV[2]; each entry as {id, {field, value, ...}} keeping only
# the fields of at most ARGV[3] bytes.
_SMALL_FIELDS = """
local rows = redis.call('XRANGE', KEYS[1], ARGV[1], '+', 'COUNT', tonumber(ARGV[2]))
local limit = tonumber(ARGV[3])
local out = {}
for _, row in ipairs(rows) do
  local kept = {}
  local f = row[2]
  for j = 1, #f, 2 do
    if string.len(f[j + 1]) <= limit then
      kept[#kept + 1] = f[j]
      kept[#kept + 1] = f[j + 1]
    end
  end
  out[#out + 1] = {row[1], kept}
end
return out
"""


@dataclass(frozen=True)
class Watched:
    """A stream worth watching and what it is for the line."""

    instance: str
    key: str
    role: str  # "output" (with producer and type), "dead" (a dead-letter stream)
    producer: str = ""
    type_name: str = ""
    source: bool = False  # the producer has no inputs: it starts chains (a trigger, a free-running camera)

    @property
    def names_parts(self) -> bool:
        """Whether its messages announce parts (frames, a source's triggers), rather than report on them."""
        return self.type_name == "Frame" or self.source


@dataclass
class Entry:
    """One stream entry as seen, with its small fields."""

    stream: Watched
    id: str
    fields: dict[str, bytes]
    seen: float

    @property
    def header(self) -> dict[str, Any] | None:
        """The decoded JSON header (``h``), or None if absent or not JSON."""
        raw = self.fields.get("h")
        if raw is None:
            return None
        try:
            value = json.loads(raw)
        except ValueError:
            return None
        return value if isinstance(value, dict) else None

    @property
    def payload(self) -> dict[str, Any]:
        h = self.header
        p = h.get("p") if h else None
        return p if isinstance(p, dict) else {}

    def text(self, name: str) -> str:
        return self.fields.get(name, b"").decode(errors="replace")


def watched_streams(graph: Graph) -> list[Watched]:
    """Every output stream of the graph (with its producer and type) and every dead-letter stream."""
    found: dict[tuple[str, str], Watched] = {}
    for name, agent in graph.agents.items():
        ports = agent.agent_class.ports()
        for port, binding in agent.outputs.items():
            declared = ports.get(port)
            type_name = getattr(getattr(declared, "type", None), "__name__", "any")
            found[(binding.instance, binding.key)] = Watched(binding.instance, binding.key, "output", name, type_name,
                                                             source=not agent.inputs)
    for agent in graph.agents.values():
        for binding in agent.inputs.values():
            dead = binding.dead_letter
            found.setdefault((dead.instance, dead.key), Watched(dead.instance, dead.key, "dead"))
            # an input fed from outside the graph: watch it too, with no producer
            found.setdefault((binding.instance, binding.key), Watched(binding.instance, binding.key, "output"))
    return list(found.values())


@dataclass
class Watcher:
    """Polls the watched streams in a thread; survives Redis restarts (it reconnects)."""

    urls: dict[str, str]
    streams: list[Watched]
    entries: list[Entry] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)  # instance -> failed rounds (Redis down)
    _last: dict[tuple[str, str], str] = field(default_factory=dict)
    _clients: dict[str, redis.Redis] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="fault-watcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop after one last round, so entries written up to now are seen."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.poll()
        for client in self._clients.values():
            client.close()

    def snapshot(self) -> list[Entry]:
        with self._lock:
            return list(self.entries)

    def _run(self) -> None:
        while not self._stop.wait(POLL):
            self.poll()

    def _client(self, instance: str) -> redis.Redis:
        client = self._clients.get(instance)
        if client is None:
            client = redis.Redis.from_url(self.urls[instance], socket_timeout=2.0, socket_connect_timeout=1.0)
            self._clients[instance] = client
        return client

    def poll(self) -> None:
        """One round over every stream; a Redis that does not answer is tried next round."""
        down: set[str] = set()
        for stream in self.streams:
            if stream.instance in down or stream.instance not in self.urls:
                continue
            try:
                self._read(stream)
            except redis.RedisError:
                down.add(stream.instance)
                self.errors[stream.instance] = self.errors.get(stream.instance, 0) + 1
                client = self._clients.pop(stream.instance, None)
                if client is not None:
                    client.close()

    def _read(self, stream: Watched) -> None:
        client = self._client(stream.instance)
        ref = (stream.instance, stream.key)
        while True:
            last = self._last.get(ref)
            start = f"({last}" if last else "-"
            rows = client.eval(_SMALL_FIELDS, 1, stream.key, start, PAGE, SMALL)
            now = time.time()
            new = []
            for raw_id, flat in rows:
                entry_id = raw_id.decode()
                fields = {flat[i].decode(errors="replace"): flat[i + 1] for i in range(0, len(flat), 2)}
                new.append(Entry(stream, entry_id, fields, now))
            if new:
                self._last[ref] = new[-1].id
                with self._lock:
                    self.entries.extend(new)
            if len(rows) < PAGE:
                return


def dump(entries: list[Entry], path: Path) -> None:
    """The entries seen, one JSON line each (small fields only), for a look after the run."""
    with path.open("w") as out:
        for e in entries:
            fields = {k: v.decode(errors="replace") for k, v in e.fields.items()}
            out.write(json.dumps({"stream": e.stream.key, "id": e.id, "seen": e.seen, "fields": fields}) + "\n")
