"""The asyncio variant of ``GraphClient``, for event-loop programs (an HTTP gateway).

    async with AsyncGraphClient("line.yaml") as client:
        verdict = await client.request("classification.frames", frame, timeout=2.0)

It shares everything but the waiting with the blocking client: ports, answering ports,
the reply reader thread (which hands each answer to the event loop) and flow control.
The requests of tasks that submit in the same turn of the loop are written together,
in a worker thread (through the blocking client's Redis connections: TLS, Sentinel and
all), so the loop never waits on Redis; the backlog, when a limit is set, is looked up
at most every 0.1 s with a short blocking call.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, Self

from .client import DEFAULT_TIMEOUT, GraphClient, Ticket
from .errors import GraphrunError, RequestTimeout
from .graph import Graph
from .message import Message

__all__ = ["AsyncGraphClient"]


Reply = tuple[Message | None, bool, BaseException | None]


class _Mailbox:
    """Answers from the reader thread to the event loop: one wake-up of the loop for all
    that arrive while it has not yet looked, not one per answer."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self._loop = loop
        self._items: list[tuple[asyncio.Queue[Reply], Reply]] = []
        self._lock = threading.Lock()
        self._scheduled = False

    def post(self, queue: asyncio.Queue[Reply], item: Reply) -> None:
        with self._lock:
            self._items.append((queue, item))
            if self._scheduled:
                return
            self._scheduled = True
        self._loop.call_soon_threadsafe(self._drain)

    def _drain(self) -> None:
        with self._lock:
            items, self._items, self._scheduled = self._items, [], False
        for queue, item in items:
            queue.put_nowait(item)


class _LoopWaiter:
    """The answers of one request, handed from the reader thread to an event loop."""

    def __init__(self, mailbox: _Mailbox):
        self._mailbox = mailbox
        self.replies: asyncio.Queue[Reply] = asyncio.Queue()

    def deliver(self, message: Message, end: bool) -> None:
        self._mailbox.post(self.replies, (message, end, None))

    def fail(self, error: BaseException) -> None:
        self._mailbox.post(self.replies, (None, True, error))


class AsyncGraphClient:
    """``GraphClient`` for asyncio: ``await request``, ``await submit`` / ``await result``,
    ``async for part in stream(...)``, ``backlog``. Make it inside the running loop."""

    def __init__(self, target: str | os.PathLike[str] | Graph, *, redis_urls: Mapping[str, str] | None = None,
                 timeout: float = DEFAULT_TIMEOUT, max_backlog: int | None = None, name: str = "client"):
        self._client = GraphClient(target, redis_urls=redis_urls, timeout=timeout, max_backlog=max_backlog, name=name)
        self._mailbox: _Mailbox | None = None
        # Requests of tasks that submit in the same turn of the loop go in one pipeline.
        self._outgoing: dict[str, list[tuple[Ticket, dict[bytes, Any], asyncio.Future[None]]]] = {}

    @classmethod
    def for_agent(cls, agent: Any, **options: Any) -> AsyncGraphClient:
        """A client for requests into the graph ``agent`` runs in, with the Redis URLs its
        runner was given (for an agent that takes requests from elsewhere: the HTTP gateway)."""
        from .runner import (
            AgentRunner,  # here: the runner imports every agent, agents import this
        )

        runner = getattr(agent, "_context", None)
        if not isinstance(runner, AgentRunner):
            raise GraphrunError(f"{agent!r} does not run in a graph (a test harness has none): no graph to ask")
        return cls(runner.graph, redis_urls=runner._overrides, **options)

    async def request(self, port: str, payload: Mapping[str, Any], *, timeout: float | None = None,
                      priority: int = 0, answer: str | None = None) -> Message:
        """The answer to ``payload`` sent to ``port`` (a streamed answer's last part)."""
        return await self.result(await self.submit(port, payload, timeout=timeout, priority=priority, answer=answer))

    async def submit(self, port: str, payload: Mapping[str, Any], *, timeout: float | None = None,
                     priority: int = 0, answer: str | None = None) -> Ticket:
        return (await self.submit_many(port, [payload], timeout=timeout, priority=priority, answer=answer))[0]

    async def submit_many(self, port: str, payloads: Sequence[Mapping[str, Any]], *, timeout: float | None = None,
                          priority: int = 0, answer: str | None = None) -> list[Ticket]:
        loop = asyncio.get_running_loop()
        if self._mailbox is None:
            self._mailbox = _Mailbox(loop)
        mailbox = self._mailbox
        tickets = self._client.prepare(port, len(payloads), timeout=timeout, answer=answer,
                                       sink=lambda: _LoopWaiter(mailbox))
        if not tickets:
            return tickets
        instance = tickets[0].instance
        written: asyncio.Future[None] = loop.create_future()
        outgoing = self._outgoing.setdefault(instance, [])
        if not outgoing:
            loop.call_soon(lambda: asyncio.ensure_future(self._write(instance)))
        outgoing.extend((t, self._client.fields_of(t, p, priority), written) for t, p in zip(tickets, payloads))
        try:
            await written
        except BaseException:
            for t in tickets:
                self._client.forget(t)
            raise
        return tickets

    async def _write(self, instance: str) -> None:
        """Send the requests gathered in this turn of the loop in one pipeline."""
        batch = self._outgoing.pop(instance, [])
        if not batch:
            return
        try:
            await asyncio.to_thread(self._client.write, instance, [(t, fields) for t, fields, _ in batch])
        except BaseException as exc:  # noqa: BLE001 - every task of the batch gets it
            for _, _, written in batch:
                if not written.done():
                    written.set_exception(exc)
            return
        for _, _, written in batch:
            if not written.done():
                written.set_result(None)

    async def result(self, ticket: Ticket) -> Message:
        last = None
        async for message in self._parts(ticket):
            last = message
        assert last is not None
        return last

    async def stream(self, port: str, payload: Mapping[str, Any], *, timeout: float | None = None,
                     priority: int = 0, answer: str | None = None) -> AsyncIterator[Message]:
        """The parts of a streamed answer, in order, until its last."""
        ticket = await self.submit(port, payload, timeout=timeout, priority=priority, answer=answer)
        async for message in self._parts(ticket):
            yield message

    async def _parts(self, ticket: Ticket) -> AsyncIterator[Message]:
        while True:
            try:
                message, end, error = await asyncio.wait_for(ticket.waiter.replies.get(),
                                                             max(0.0, ticket.deadline - time.time()))
            except (asyncio.TimeoutError, TimeoutError):
                await self._give_up(ticket)
                raise RequestTimeout(f"no answer from {ticket.answer} to request {ticket.id} sent to {ticket.port} "
                                     "within its deadline") from None
            if error is not None:
                raise error
            assert message is not None
            if end:
                self._client.forget(ticket)
            yield message
            if end:
                return

    async def _give_up(self, ticket: Ticket) -> None:
        await asyncio.to_thread(self._client.give_up, ticket)

    def backlog(self, port: str) -> int:
        return self._client.backlog(port)

    def check(self, port: str, answer: str | None = None) -> None:
        """Raise (UnknownPort, ConfigError) unless ``port`` takes requests and has an answering port."""
        self._client.check(port, answer)

    async def aclose(self) -> None:
        await asyncio.to_thread(self._client.close)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

