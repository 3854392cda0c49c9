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
        self.failure: GraphrunError | None = None  # why the reader died, if it did

    def register(self, correlation: str, sink: Sink) -> None:
        """Hand the answers of ``correlation`` to ``sink``; raises when no answer can come."""
        with self._lock:
            if self.failure is not None:
                raise self.failure
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
                    for entry in transport.parse_read(reply):
                        last = entry.id
                        self._dispatch(entry.fields or {})
                    if reply and time.monotonic() >= trim_due:
                        self._client.xtrim(self._key, minid=last, approximate=False)
                        trim_due = time.monotonic() + TRIM_INTERVAL
                    backoff.reset()
                except transport.CONNECTION_ERRORS as exc:
                    log.warning("reply stream %s: Redis unreachable (%s); reading again", self._key, exc)
                    self._stopping.wait(backoff.next())
        except Exception as exc:
            log.exception("reply reader of %s died", self._key)
            with self._lock:
                self.failure = GraphrunError(f"the reader of reply stream {self._key} died: {exc!r}")
                sinks, self._sinks = list(self._sinks.values()), {}
            for sink in sinks:
                sink.fail(self.failure)

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


class _Batch:
    """Requests that go to Redis in one pipeline; their writers wait for ``done``."""

    def __init__(self) -> None:
        self.items: list[tuple[Ticket, Mapping[bytes, Any]]] = []
        self.done = threading.Event()
        self.error: BaseException | None = None


class GroupWriter:
    """Writes requests to one Redis instance, the requests of threads that submit at the
    same time together (group commit): while one pipeline is on its way, the next batch
    gathers; the thread that opened it sends it when the one before is answered, and the
    others wait for it alone (no wake-up of every waiting thread). A lone caller writes at
    once, with no thread between it and Redis."""

    def __init__(self, client: redis.Redis):
        self._client = client
        self._lock = threading.Lock()
        self._open: _Batch | None = None  # gathering requests
        self._in_flight: _Batch | None = None  # the last batch sent, answered or not

    def write(self, writes: list[tuple[Ticket, Mapping[bytes, Any]]]) -> None:
        """Write ``writes`` (with those of other threads); sets their entry ids."""
        with self._lock:
            lead = self._open is None
            if lead:
                self._open = _Batch()
            batch = self._open
            assert batch is not None
            batch.items.extend(writes)
            before = self._in_flight if lead else None
        if lead:
            if before is not None:
                before.done.wait()  # one pipeline at a time: requests stay in order
            with self._lock:
                self._open, self._in_flight = None, batch
            self._send(batch)
        else:
            batch.done.wait()
        if batch.error is not None:
            raise batch.error

    def _send(self, batch: _Batch) -> None:
        try:
            if len(batch.items) == 1:
                ids = [self._client.xadd(batch.items[0][0].stream, batch.items[0][1])]  # type: ignore[arg-type]
            else:
                pipe = self._client.pipeline(transaction=False)
                for t, fields in batch.items:
                    pipe.xadd(t.stream, fields)  # type: ignore[arg-type]
                ids = pipe.execute()
            for (t, _), entry_id in zip(batch.items, ids):
                t.entry_id = transport.text(entry_id)
        except BaseException as exc:  # noqa: BLE001 - handed to every writer of the batch
            batch.error = exc
        finally:
            batch.done.set()
