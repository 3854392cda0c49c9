"""Requests into a running graph from outside it: an MES, a test bench, a notebook.

    with GraphClient("line.yaml") as client:
        verdict = client.request("classification.frames", frame, timeout=2.0)

A request is a message written to an input port's stream; its envelope carries a
correlation id, the caller's reply stream, the answering port and a deadline, and every
message derived from it carries them on, so agents answer with no code of their own: the
runtime writes the answering port's output to the reply stream too. One reader thread
per client takes every answer from that stream and hands it to its caller.

At-least-once delivery may answer a request twice (an agent that crashed after sending):
the first answer counts, later ones are dropped. A request that times out is taken back
from its stream (XDEL; an agent that already took it skips it once it has expired), and
the reply stream expires on its own: a client that went away leaves nothing behind.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Self

from . import transport
from .calls import Port, Target, backlog, request_fields
from .client_io import READ_BLOCK_MS, GroupWriter, ReplyReader, Sink, Waiter
from .errors import BacklogFull, RequestTimeout
from .graph import Graph
from .message import Message, Request, new_id
from .replies import caller_key

__all__ = ["GraphClient", "Ticket"]

log = logging.getLogger("graphrun.client")

DEFAULT_TIMEOUT = 10.0  # seconds a request waits for its answer unless told otherwise
BACKLOG_CHECK_INTERVAL = 0.1  # seconds a port's backlog is taken as known, for the limit


@dataclass
class Ticket:
    """A request on its way (``submit``); ``GraphClient.result`` waits for its answer."""

    id: str
    port: str
    answer: str
    deadline: float  # time.time() when its caller stops waiting
    instance: str
    stream: str
    entry_id: str | None = None
    waiter: Any = field(default_factory=Waiter, repr=False)  # the Sink its answers go to


@dataclass
class _Admitted:
    """What the backlog limit knows of one port: its backlog when last looked up, and the
    requests admitted since that are not yet answered."""

    checked: float  # time.monotonic() of the look
    backlog: int
    since: set[str] = field(default_factory=set)


class GraphClient:
    """Requests into a running graph, from a graph file (ports ``AGENT.PORT``) or a Redis
    URL (ports named by stream key; ``answer=`` then names the answering AGENT.PORT).

    ``max_backlog``: refuse a request (``BacklogFull``) while the port's consumer group has
    that many entries unfinished, rather than queue work nobody will wait for. Thread-safe:
    one client serves many threads, all answers arriving through one reader.
    """

    def __init__(self, target: str | os.PathLike[str] | Graph, *, redis_urls: Mapping[str, str] | None = None,
                 timeout: float = DEFAULT_TIMEOUT, max_backlog: int | None = None, name: str = "client"):
        self.target = Target(target, redis_urls)
        self.timeout = timeout
        self.max_backlog = max_backlog
        self.name = name
        self._clients = {i: transport.connect(u, name=f"graphrun-{name}") for i, u in self.target.urls.items()}
        self.reply_key = caller_key(self.target.name, name, new_id())
        self.reply_instance = self.target.reply_instance
        self._admitted: dict[str, _Admitted] = {}  # port -> what the limit knows of it
        self._admitting = threading.Lock()
        self._writers = {i: GroupWriter(c) for i, c in self._clients.items()}
        reader_client = transport.connect(self.target.urls[self.reply_instance], name=f"graphrun-{name}-replies")
        self._reader = ReplyReader(reader_client, self.reply_key)
        self._reader.start()

    # --- requests --------------------------------------------------------------------

    def request(self, port: str, payload: Mapping[str, Any], *, timeout: float | None = None,
                priority: int = 0, answer: str | None = None) -> Message:
        """The answer to ``payload`` sent to ``port``; raises RequestTimeout when none
        came within ``timeout`` seconds. A streamed answer's last part is returned."""
        return self.result(self.submit(port, payload, timeout=timeout, priority=priority, answer=answer))

    def submit(self, port: str, payload: Mapping[str, Any], *, timeout: float | None = None,
               priority: int = 0, answer: str | None = None) -> Ticket:
        """Send a request and return at once; ``result`` waits for its answer."""
        return self.submit_many(port, [payload], timeout=timeout, priority=priority, answer=answer)[0]

    def submit_many(self, port: str, payloads: Sequence[Mapping[str, Any]], *, timeout: float | None = None,
                    priority: int = 0, answer: str | None = None) -> list[Ticket]:
        """Send several requests in one round trip (pipelined), each with its own answer."""
        tickets = self.prepare(port, len(payloads), timeout=timeout, answer=answer)
        if not tickets:
            return tickets
        writes = [(t, self.fields_of(t, p, priority)) for t, p in zip(tickets, payloads)]
        try:
            self.write(tickets[0].instance, writes)
        except BaseException:
            for t in tickets:
                self.forget(t)
            raise
        return tickets

    def prepare(self, port: str, count: int, *, timeout: float | None, answer: str | None,
                sink: Callable[[], Sink] = Waiter) -> list[Ticket]:
        """Tickets for ``count`` requests to ``port``, registered with the reader (the part
        of ``submit`` before the write, shared with the asyncio client, whose ``sink``
        hands answers to its event loop)."""
        p = self.target.port(port)
        answering = self.target.answer_of(p, answer)
        deadline = time.time() + (self.timeout if timeout is None else timeout)
        tickets = [Ticket(new_id(), port, answering, deadline, p.instance, p.key, waiter=sink()) for _ in range(count)]
        self._admit(p, tickets)
        for t in tickets:
            self._reader.register(t.id, t.waiter)
        return tickets

    def write(self, instance: str, writes: list[tuple[Ticket, Mapping[bytes, Any]]]) -> None:
        """Write prepared requests to their streams on ``instance``; sets their entry ids."""
        self._writers[instance].write(writes)

    def fields_of(self, ticket: Ticket, payload: Mapping[str, Any], priority: int) -> dict[bytes, Any]:
        request = Request(ticket.id, (self.reply_instance, self.reply_key), ticket.answer, ticket.deadline, priority)
        return request_fields(payload, request, f"client:{self.name}")

    def result(self, ticket: Ticket) -> Message:
        """The answer to a submitted request (a streamed answer's last part); raises
        RequestTimeout at the request's deadline."""
        last = None
        for message in self._parts(ticket):
            last = message
        assert last is not None
        return last

    def stream(self, port: str, payload: Mapping[str, Any], *, timeout: float | None = None,
               priority: int = 0, answer: str | None = None) -> Iterator[Message]:
        """The parts of a streamed answer (chunks, tokens), in order, until its last; the
        timeout bounds the whole answer."""
        return self._parts(self.submit(port, payload, timeout=timeout, priority=priority, answer=answer))

    def _parts(self, ticket: Ticket) -> Iterator[Message]:
        while True:
            try:
                message, end, error = ticket.waiter.replies.get(timeout=max(0.0, ticket.deadline - time.time()))
            except queue.Empty:
                self.give_up(ticket)
                raise RequestTimeout(f"no answer from {ticket.answer} to request {ticket.id} sent to {ticket.port} "
                                     f"within its deadline") from None
            if error is not None:
                raise error
            assert message is not None
            if end:
                self.forget(ticket)
            yield message
            if end:
                return

    def forget(self, ticket: Ticket) -> None:
        """Stop handing answers to ``ticket`` (an answer that still comes is dropped): it is
        answered, or nobody waits for it; the backlog limit stops counting it."""
        self._reader.forget(ticket.id)
        with self._admitting:
            admitted = self._admitted.get(ticket.port)
            if admitted is not None:
                admitted.since.discard(ticket.id)

    def give_up(self, ticket: Ticket) -> None:
        """Forget a request nobody waits for any more, and take it back from its stream: an
        agent that has not taken it never sees it (one that has skips it: it has expired)."""
        self.forget(ticket)
        if ticket.entry_id is not None:
            try:
                self._clients[ticket.instance].xdel(ticket.stream, ticket.entry_id)
            except transport.CONNECTION_ERRORS as exc:
                log.warning("request %s could not be taken back from %s: %s", ticket.id, ticket.stream, exc)

    def check(self, port: str, answer: str | None = None) -> None:
        """Raise (UnknownPort, ConfigError) unless ``port`` takes requests and has an answering port."""
        self.target.answer_of(self.target.port(port), answer)

    # --- flow control ---------------------------------------------------------------

    def backlog(self, port: str) -> int:
        """Entries of ``port``'s stream its agent has not finished (not read, or read and not
        acknowledged): the signal for more replicas, and for refusing requests."""
        p = self.target.port(port)
        return backlog(self._clients[p.instance], p)

    def _admit(self, port: Port, tickets: list[Ticket]) -> None:
        """Refuse ``tickets`` over the limit. The backlog is looked up at most every
        ``BACKLOG_CHECK_INTERVAL``; requests admitted since and not yet answered count too."""
        if self.max_backlog is None:
            return
        now = time.monotonic()
        with self._admitting:
            admitted = self._admitted.get(port.name)
            if admitted is None or now - admitted.checked > BACKLOG_CHECK_INTERVAL:
                admitted = self._admitted[port.name] = _Admitted(now, backlog(self._clients[port.instance], port))
            waiting = admitted.backlog + len(admitted.since)
            if waiting + len(tickets) > self.max_backlog:
                raise BacklogFull(f"{port.name}: {waiting} request(s) waiting, the limit is {self.max_backlog}")
            admitted.since.update(t.id for t in tickets)

    # --- lifetime --------------------------------------------------------------------

    def close(self) -> None:
        """Stop reading answers and delete the reply stream (answers still on their way
        make it again, and it expires)."""
        self._reader.stop()
        self._reader.join(READ_BLOCK_MS / 1000 + 2)
        try:
            self._clients[self.reply_instance].delete(self.reply_key)
        except transport.CONNECTION_ERRORS as exc:
            log.warning("reply stream %s not deleted (%s); it expires", self.reply_key, exc)
        for client in self._clients.values():
            client.connection_pool.disconnect()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

