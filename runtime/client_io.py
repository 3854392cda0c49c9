"""The I/O of a ``GraphClient``: the thread that reads its reply stream, and the group
writer that puts the requests of concurrent callers into one pipeline."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

import redis

from . import transport
from .backoff import Backoff
from .calls import parse_reply
from .errors import GraphrunError
from .message import Message

if TYPE_CHECKING:
    from .client import Ticket

log = logging.getLogger("graphrun.client")

READ_BLOCK_MS = 200  # how long the reply reader blocks; bounds how fast close() is seen
READ_COUNT = 1000  # replies taken in one read
TRIM_INTERVAL = 1.0  # seconds between trims of the replies already read


class Sink(Protocol):
    """Where the reader hands the answers of one request."""

    def deliver(self, message: Message, end: bool) -> None: ...
    def fail(self, error: BaseException) -> None: ...


class Waiter:
    """The answers of one blocking request, in arrival order."""

    def __init__(self) -> None:
        self.replies: queue.SimpleQueue[tuple[Message | None, bool, BaseException | None]] = queue.SimpleQueue()

    def deliver(self, message: Message, end: bool) -> None:
        self.replies.put((message, end, None))

    def fail(self, error: BaseException) -> None:
        self.replies.put((None, True, error))


class ReplyReader(threading.Thread):
    """Reads a client's reply stream and hands each answer to the request it answers."""

    def __init__(self, client: redis.Redis, key: str):
        super().__init__(name=f"graphrun-replies-{key}", daemon=True)
        self._client = client
        self._key = key
        self._sinks: dict[str, Sink] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self.dropped = 0  # answers nobody waits for: late, or a second delivery

    def register(self, correlation: str, sink: Sink) -> None:
        with self._lock:
            self._sinks[correlation] = sink

    def forget(self, correlation: str) -> None:
        with self._lock:
            self._sinks.pop(correlation, None)

    def stop(self) -> None:
        self._stopping.set()

    def run(self) -> None:
        last = "0-0"  # the stream is this client's own: everything in it is for it
        trim_due = time.monotonic() + TRIM_INTERVAL
        backoff = Backoff(initial=0.05, maximum=2.0)
        try:
            while not self._stopping.is_set():
                try:
                    reply = self._client.xread({self._key: last}, count=READ_COUNT, block=READ_BLOCK_MS)
                    backoff.reset()
                except transport.CONNECTION_ERRORS as exc:
                    log.warning("reply stream %s: Redis unreachable (%s); reading again", self._key, exc)
                    self._stopping.wait(backoff.next())
                    continue
                for entry in transport.parse_read(reply):
                    last = entry.id
                    self._dispatch(entry.fields or {})
                if reply and time.monotonic() >= trim_due:
                    self._client.xtrim(self._key, minid=last, approximate=False)
                    trim_due = time.monotonic() + TRIM_INTERVAL
        except Exception as exc:
            log.exception("reply reader of %s died", self._key)
            with self._lock:
                sinks, self._sinks = list(self._sinks.values()), {}
            for sink in sinks:
                sink.fail(GraphrunError(f"the reader of reply stream {self._key} died: {exc!r}"))

    def _dispatch(self, fields: Mapping[bytes, bytes]) -> None:
        try:
            message, end = parse_reply(fields)
        except GraphrunError as exc:
            log.error("reply stream %s: an entry that is no answer: %s", self._key, exc)
            return
        request = message.request
        with self._lock:
            sink = self._sinks.get(request.id) if request is not None else None
            if sink is not None and end:
                del self._sinks[request.id]  # type: ignore[union-attr]
        if sink is None:
            self.dropped += 1
            return
        sink.deliver(message, end)


class GroupWriter:
    """Writes requests to one Redis instance, the requests of threads that submit at the
    same time together: while one pipeline is on its way, the requests of other threads
    gather, and the next caller sends them all in one round trip (group commit). A lone
    caller writes at once, with no thread between it and Redis."""

    def __init__(self, client: redis.Redis):
        self._client = client
        self._ready = threading.Condition()
        self._waiting: list[tuple[Ticket, Mapping[bytes, Any]]] = []
        self._sending = False
        self._failed: dict[str, BaseException] = {}  # ticket id -> why its write failed

    def write(self, writes: list[tuple[Ticket, Mapping[bytes, Any]]]) -> None:
        """Write ``writes`` (with those other threads wait to write); sets their entry ids."""
        mine = writes[-1][0]
        with self._ready:
            self._waiting.extend(writes)
            while self._sending and mine.entry_id is None and mine.id not in self._failed:
                self._ready.wait()
            if mine.entry_id is None and mine.id not in self._failed:
                batch, self._waiting, self._sending = self._waiting, [], True
            else:
                batch = []
        if batch:
            self._send(batch)
        with self._ready:
            error = None
            for t, _ in writes:
                error = self._failed.pop(t.id, None) or error
        if error is not None:
            raise error

    def _send(self, batch: list[tuple[Ticket, Mapping[bytes, Any]]]) -> None:
        try:
            if len(batch) == 1:
                ids = [self._client.xadd(batch[0][0].stream, batch[0][1])]  # type: ignore[arg-type]
            else:
                pipe = self._client.pipeline(transaction=False)
                for t, fields in batch:
                    pipe.xadd(t.stream, fields)  # type: ignore[arg-type]
                ids = pipe.execute()
            error = None
        except BaseException as exc:  # noqa: BLE001 - handed to every caller of the batch
            ids, error = [], exc
        with self._ready:
            for (t, _), entry_id in zip(batch, ids):
                t.entry_id = transport.text(entry_id)
            if error is not None:
                self._failed.update((t.id, error) for t, _ in batch)
            self._sending = False
            self._ready.notify_all()
