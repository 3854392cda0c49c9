"""One hop between two processes, bounded: the pieces of bench/transport.py.

A producer process sends numbered messages to a stream, a consumer process reads and
acknowledges them. Both share a ``Board`` (a small memory-mapped file): the consumer
records how many messages it has taken, which ones were missing and each one's
latency; the producer never has more than ``WINDOW`` messages unconsumed, so Redis
holds a bounded backlog, as on a production line where a camera's stream is capped
and its reader keeps up. The coordinating process reads the board to time the run.

Producers and consumers come in three kinds: ``plain`` and ``tuned`` redis-py (see
``raw_client``) and ``graphrun``: a source agent and a sink agent, each run by
graphrun's runner, with frames through Redis or (``frames=True``) through a
shared-memory frame store, the stream carrying the references.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import redis
from pydantic import BaseModel
from redis.connection import PythonRespSerializer, UnixDomainSocketConnection

from graphrun import Agent, Input, Message, Output
from graphrun.graph import Graph, parse_graph
from graphrun.pacing import Pacer
from graphrun.redis_server import RedisServer
from graphrun.runner import AgentRunner

WINDOW = 32  # most messages sent and not yet consumed
MAXLEN = 50  # the stream's bound, as the shipped frame streams: above WINDOW, so nothing unread is trimmed
POLL = 0.0002  # seconds a producer waits before looking at a full window again
STREAM = "bench.frames"
GROUP = "bench"


class Board:
    """Shared between a hop's processes: counters, a stop flag and per-message latencies.

    A memory-mapped file rather than multiprocessing objects, so that agents run by
    graphrun's runner find it by a path in their params. Each cell has one writer.
    """

    CONSUMED, LOST, STOP, WRITTEN_OFF, GAVE_UP = 0, 1, 2, 3, 4  # the last two: the producer's
    HEAD = 6

    def __init__(self, path: str | os.PathLike[str], capacity: int | None = None):
        self.path = str(path)
        if capacity is not None:  # create
            np.zeros(self.HEAD + capacity, np.float64).tofile(self.path)
        cells = np.memmap(self.path, np.float64, mode="r+")
        self._head, self.latency = cells[:self.HEAD], cells[self.HEAD:]

    @classmethod
    def create(cls, folder: str | os.PathLike[str], capacity: int) -> Board:
        return cls(Path(folder) / "board", capacity)

    @property
    def consumed(self) -> int:
        return int(self._head[self.CONSUMED])

    @property
    def lost(self) -> int:
        return int(self._head[self.LOST])

    @property
    def stopped(self) -> bool:
        return bool(self._head[self.STOP])

    def stop(self) -> None:
        self._head[self.STOP] = 1

    @property
    def given_up(self) -> int:
        """Messages the producer stopped waiting for (see ``give_up``): lost at the tail."""
        return int(self._head[self.GAVE_UP])

    def room(self, seq: int, window: int = WINDOW) -> bool:
        """Whether message ``seq`` may be sent: fewer than ``window`` are unconsumed."""
        return seq - max(self.consumed + self.lost, int(self._head[self.WRITTEN_OFF])) < window

    def give_up(self, seq: int) -> None:
        """The producer stops waiting for the messages before ``seq``: a transport that
        drops the newest messages of a full window leaves no later one to show the gap."""
        seen = max(self.consumed + self.lost, int(self._head[self.WRITTEN_OFF]))
        self._head[self.GAVE_UP] += max(0, seq - seen)
        self._head[self.WRITTEN_OFF] = seq

    def took(self, seq: int, latency: float) -> None:
        """The consumer has taken message ``seq``; a jump in numbers counts as lost until
        the messages skipped arrive (replicas answer out of order)."""
        n, lost = self.consumed, self.lost
        if seq >= n + lost:
            self._head[self.LOST] = seq - n
        elif lost > 0:
            self._head[self.LOST] = lost - 1
        if n < len(self.latency):
            self.latency[n] = latency
        self._head[self.CONSUMED] = n + 1


def _sleep(seconds: float) -> bool:
    time.sleep(seconds)
    return False


# --- plain and tuned redis-py ------------------------------------------------------------


class _PythonPackedUnix(UnixDomainSocketConnection):
    def _construct_command_packer(self, packer: Any) -> Any:
        return PythonRespSerializer(self._buffer_cutoff, self.encoder.encode)


def raw_client(kind: str, server: RedisServer) -> redis.Redis:
    """plain: redis-py's defaults over TCP; tuned: the three changes graphrun's transport
    makes for large payloads (pure-Python packer, unix socket, 1 MiB reads), nothing else."""
    if kind == "plain":
        return redis.Redis(host="127.0.0.1", port=server.port)
    pool = redis.ConnectionPool(connection_class=_PythonPackedUnix, path=server.unix_socket, socket_read_size=1 << 20)
    return redis.Redis(connection_pool=pool)


def raw_producer(kind: str, server: RedisServer, board_path: str, size: int, rate: float, count: int,
                 also: tuple[str, ...] = ()) -> None:
    """``also``: the boards of further readers (fan-out): a message waits for room on every one."""
    client, boards = raw_client(kind, server), [Board(p) for p in (board_path, *also)]
    board = boards[0]
    data = np.zeros(size, np.uint8)
    payload: bytes | memoryview = data.tobytes() if kind == "plain" else memoryview(data)
    pace = Pacer(rate or None)
    seq = 0
    while seq < count and not board.stopped:
        if not all(b.room(seq) for b in boards):
            time.sleep(POLL)
            continue
        pace.wait(_sleep)
        client.xadd(STREAM, {"seq": seq, "t": repr(time.time()), "data": payload}, maxlen=MAXLEN, approximate=True)
        seq += 1


def raw_consumer(kind: str, server: RedisServer, board_path: str, group: str = GROUP) -> None:
    """XREADGROUP COUNT 1 and XACK per message, as a plain script does."""
    client, board = raw_client(kind, server), Board(board_path)
    while not board.stopped:
        reply = client.xreadgroup(group, "c1", {STREAM: ">"}, count=1, block=100)
        for entry_id, fields in reply[0][1] if reply else []:
            now = time.time()
            client.xack(STREAM, group, entry_id)
            board.took(int(fields[b"seq"]), now - float(fields[b"t"]))


# --- graphrun: two agents, each run by the runner ------------------------------------------


class BenchSource(Agent):
    """Sends numbered payloads of ``size`` bytes, at ``rate`` (0: as the window allows)."""

    frames = Output()

    class Params(BaseModel):
        board: str
        size: int
        rate: float = 0.0
        count: int = 1 << 62
        also: list[str] = []  # the boards of further readers (fan-out): each must have room

    def start(self) -> None:
        self._board = Board(self.params.board)
        self._boards = [self._board, *(Board(p) for p in self.params.also)]
        self._data = np.zeros(self.params.size, np.uint8)
        self._pace = Pacer(self.params.rate or None)
        self._seq = 0

    def produce(self) -> None:
        if self._seq >= self.params.count or not all(b.room(self._seq) for b in self._boards):
            self.wait(POLL)
            return
        if self._pace.wait(self.wait):
            self.frames.send({"seq": self._seq, "data": self._data})
            self._seq += 1


class BenchSink(Agent):
    frames = Input()

    class Params(BaseModel):
        board: str

    def start(self) -> None:
        self._board = Board(self.params.board)

    def handle(self, msg: Message) -> None:
        self._board.took(msg["seq"], msg.received - msg.created)  # type: ignore[operator]


GRAPH = """\
name: bench
redis: {{main: {{persistence: {persistence}{store}}}}}
agents:
  source:
    type: hop:BenchSource
    params: {{board: "{board}", size: {size}, rate: {rate}, count: {count}, also: {also}}}
    outputs: {{frames: {{stream: {stream}, maxlen: {maxlen}}}}}
  sink:
    type: hop:BenchSink
    params: {{board: "{board}"}}
    inputs: {{frames: source.frames}}
"""
FURTHER_SINK = """\
  sink{n}:
    type: hop:BenchSink
    params: {{board: "{board}"}}
    inputs: {{frames: source.frames}}
"""


def frame_store_setting(size: int, slots: int = 2 * WINDOW) -> str:
    """The graph's frame_store for payloads of ``size`` bytes: twice the window in slots."""
    slot = max(1 << 20, -(-size // (1 << 20)) * (1 << 20))
    return f", frame_store: {{size: {slots * slot}, slot_size: {slot}, threshold: 65536}}"


def graphrun_graph(persistence: str, board: Board, size: int, rate: float, count: int, frames: bool = False,
                   also: tuple[str, ...] = ()) -> Graph:
    """``also``: boards of further sinks (``sink1``, ``sink2``…), each its own consumer group."""
    text = GRAPH.format(persistence=persistence, board=board.path, size=size, rate=rate, count=count,
                        stream=STREAM, maxlen=MAXLEN, store=frame_store_setting(size) if frames else "",
                        also="[" + ", ".join(f'"{p}"' for p in also) + "]")
    return parse_graph(text + "".join(FURTHER_SINK.format(n=n, board=p) for n, p in enumerate(also, 1)))


def remove_frame_store(graph: Graph, url: str) -> None:
    """Remove the store file a graph's agents made for ``url`` (each run has a fresh Redis)."""
    from graphrun import frame_store
    from graphrun.frame_path import store_name

    for instance in graph.redis:
        frame_store.remove(frame_store.DIRECTORY / store_name(graph.name, instance, url))


def run_agent(graph: Graph, name: str, url: str, board_path: str, replica: int = 0) -> None:
    """Run one agent (one replica of it) until the board says stop (then it stops as on SIGTERM)."""
    runner = AgentRunner(graph, name, replica=replica, redis_urls={"main": url})
    board = Board(board_path)

    def watch() -> None:
        while not board.stopped:
            time.sleep(0.05)
        runner.request_stop()

    threading.Thread(target=watch, daemon=True).start()
    runner.run()


def scratch() -> tempfile.TemporaryDirectory[str]:
    """A folder for a board: in memory where the system has /dev/shm."""
    return tempfile.TemporaryDirectory(prefix="graphrun-bench-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
