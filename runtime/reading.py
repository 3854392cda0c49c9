"""Reading: new entries, own pending entries, and reader threads.

The read strategy forms batches without paying for huge replies. Small entries are
read ``batch`` at a time in one XREADGROUP. For large entries (frames of megabytes)
one reply of many entries costs more to parse than the round trips it saves, so, for an
agent that overrides ``handle_batch`` (inference), a read asks for two: a second entry
means a backlog, and the rest of the batch is then fetched with single-entry reads
pipelined in one round trip. When the consumer keeps up, a read costs what a
single-entry read costs; when it falls behind, the agent gets whole batches. An agent
that handles one message at a time reads large entries one at a time: gathering a batch
would only hold back their acknowledgements (and with them a bounded producer).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import redis

from . import transport
from .graph import InputBinding
from .transport import CONNECTION_ERRORS, Entry

log = logging.getLogger("graphrun.runner")

READ_BUDGET = 2 << 20  # bytes one XREADGROUP reply should hold at most
PROBE = 2  # entries a read of large entries asks for: a second one means a backlog


class StreamReader:
    """Reads new entries of the input streams one Redis instance holds.

    Owner: exactly one thread (the handling thread, or this instance's reader thread);
    it keeps the running mean entry size that the read strategy uses.
    """

    def __init__(self, client: redis.Redis, group: str, consumer: str, bindings: Sequence[InputBinding], *,
                 batches: bool = True):
        self.client = client
        # False: the agent handles one message at a time, so large entries are read one at
        # a time too (gathering a batch of frames only delays their acknowledgements).
        self.batches = batches
        self.group = group
        self.consumer = consumer
        self.bindings = list(bindings)
        self.instance = self.bindings[0].instance
        self.batch = max(b.spec.batch for b in bindings)
        self.wait_ms = max(b.spec.batch_wait_ms for b in bindings)
        self._streams = {b.key: ">" for b in bindings}
        self.entry_bytes: float | None = None  # unknown until the first read

    def _count(self, wanted: int) -> int:
        """Entries one reply may hold: ``wanted`` for small entries, PROBE for large ones."""
        if self.entry_bytes is None:
            return 1  # the first read learns the entry size
        if self.entry_bytes * wanted <= READ_BUDGET:
            return wanted
        return min(wanted, PROBE) if self.batches else 1

    def read(self, block_ms: int) -> list[Entry]:
        """One read of new entries, filled for up to ``batch_wait_ms``; [] when none came."""
        count = self._count(self.batch)
        entries = transport.read_group(self.client, self.group, self.consumer, self._streams,
                                       count=count, block_ms=block_ms)
        if not entries:
            return entries
        self._learn(entries)
        small = self.entry_bytes is not None and self.entry_bytes * 2 <= READ_BUDGET
        if len(entries) >= count and len(entries) < self.batch and (self.batches or small):
            # A full reply: there may be a backlog (large entries: only for agents that batch).
            entries += self._more(self.batch - len(entries))
        if self.wait_ms > 0 and len(entries) < self.batch:
            end = time.monotonic() + self.wait_ms / 1000
            while len(entries) < self.batch and (left := end - time.monotonic()) > 0:
                more = transport.read_group(self.client, self.group, self.consumer, self._streams,
                                            count=self._count(self.batch - len(entries)),
                                            block_ms=max(1, int(left * 1000)))
                if not more:
                    break
                entries += more
        return entries

    def ahead_command(self) -> tuple[object, ...] | None:
        """The next read of new entries as a raw command, to go after a flush in its round
        trip (``Outbox.flush(then=...)``); None where reads are more than one XREADGROUP
        (large entries, ``batch_wait_ms``)."""
        if self.wait_ms > 0 or self._count(self.batch) < self.batch:
            return None
        return ("XREADGROUP", "GROUP", self.group, self.consumer, "COUNT", self.batch, "STREAMS",
                *self._streams, *self._streams.values())

    def take_ahead(self, reply: Any) -> list[Entry]:
        """The entries of a raw reply to ``ahead_command``."""
        entries = transport.parse_read(_as_parsed(reply))
        if entries:
            self._learn(entries)
        return entries

    def _learn(self, entries: list[Entry]) -> None:
        size = sum(len(v) for e in entries if e.fields for v in e.fields.values()) / len(entries)
        self.entry_bytes = size if self.entry_bytes is None else 0.8 * self.entry_bytes + 0.2 * size

    def _more(self, n: int) -> list[Entry]:
        """Up to ``n`` more entries without waiting: one read for small entries, single-entry
        reads pipelined in one round trip for large ones."""
        count = self._count(n)
        if count >= n:
            return transport.read_group(self.client, self.group, self.consumer, self._streams, count=n, block_ms=None)
        return self._singles(n)

    def _singles(self, n: int) -> list[Entry]:
        """Up to ``n`` more entries as single-entry reads, pipelined in one round trip."""
        pipe = self.client.pipeline(transaction=False)
        for _ in range(n):
            pipe.xreadgroup(self.group, self.consumer, self._streams, count=1)
        out: list[Entry] = []
        for reply in pipe.execute():
            out += transport.parse_read(reply)
        return out


def _as_parsed(reply: Any) -> Any:
    """A raw XREADGROUP reply (streams as a list or a map, each entry's fields a flat list)
    as redis-py parses it: fields as a dict."""
    if not reply:
        return reply  # nothing new
    streams = reply.items() if isinstance(reply, dict) else reply
    return [[stream, [[entry_id, dict(zip(fields[::2], fields[1::2])) if fields else None]
                      for entry_id, fields in entries]] for stream, entries in streams]


def own_pending(client: redis.Redis, group: str, consumer: str, binding: InputBinding) -> Iterator[list[Entry]]:
    """This consumer's pending entries of one stream, in batches, oldest first."""
    after = "0"
    while True:
        entries = transport.read_group(client, group, consumer, {binding.key: after},
                                       count=binding.spec.batch, block_ms=None)
        if not entries:
            return
        after = entries[-1].id
        yield entries


# --- reader threads ---------------------------------------------------------------------


@dataclass(frozen=True)
class Read:
    """What a reader thread hands the handling thread: entries, or why it could not read."""

    instance: str
    entries: list[Entry]
    error: BaseException | None = None


class ReaderThread(threading.Thread):
    """Blocks on one instance's reads, so that with inputs on several Redis instances a
    message on any of them is handled at once. Handling stays on the handling thread:
    this thread owns only its ``StreamReader`` and talks through ``inbox``.

    A connection error is reported through the inbox and retried after a pause (the
    handling thread reconnects and recreates groups); any other error ends the thread,
    and is reported through the inbox first, so it never dies silently.
    """

    def __init__(self, reader: StreamReader, inbox: queue.Queue[Read], stopping: threading.Event,
                 block_ms: int, *, name: str):
        super().__init__(name=name, daemon=True)
        self.reader = reader
        self.inbox = inbox
        self.stopping = stopping
        self.block_ms = block_ms

    def run(self) -> None:
        instance = self.reader.instance
        try:
            while not self.stopping.is_set():
                try:
                    read = Read(instance, self.reader.read(self.block_ms))
                except (*CONNECTION_ERRORS, redis.ResponseError) as exc:
                    if isinstance(exc, redis.ResponseError) and "NOGROUP" not in str(exc):
                        raise
                    self._put(Read(instance, [], exc))
                    self.stopping.wait(0.5)  # the handling thread recovers; then read again
                    continue
                if read.entries:
                    self._put(read)
        except BaseException as exc:
            log.exception("reader of Redis %s stopped", instance)
            self._put(Read(instance, [], exc), force=True)

    def _put(self, read: Read, force: bool = False) -> None:
        # One batch read ahead per instance at most: the rest waits in Redis, not here.
        while not self.stopping.is_set() or force:
            try:
                self.inbox.put(read, timeout=0.5)
                return
            except queue.Full:
                if force and self.stopping.is_set():
                    return
