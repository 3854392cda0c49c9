"""The message envelope that travels on every stream.

A message is a payload (a mapping of JSON values and numpy arrays) plus the trace
that makes a process graph observable: who made it, when its origin was made, and
which agents it has passed through.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

SCHEMA_VERSION = 1

P = TypeVar("P", bound=Mapping[str, Any])

# Message ids: 64 random bits drawn once per process, then a counter. uuid4 reads the
# OS's random source for every message; this reads it once per process and is still
# unique across processes, hosts and restarts (a restart or a forked child draws anew).
_prefix = ""
_counter: Iterator[int] = iter(())


def _draw_prefix() -> None:
    global _prefix, _counter
    _prefix = os.urandom(8).hex() + "-"
    _counter = itertools.count()


_draw_prefix()
os.register_at_fork(after_in_child=_draw_prefix)


def new_id() -> str:
    """A message id no other message has: this process's prefix and its next number."""
    return f"{_prefix}{next(_counter):x}"


@dataclass(frozen=True, slots=True)
class Hop:
    """One agent on a message's path: when it received the input and when it sent."""

    agent: str
    received: float
    sent: float


@dataclass(frozen=True, slots=True)
class Request:
    """What makes a message part of a request from outside the graph (``graphrun.client``).

    It travels in the envelope from the request to every message derived from it, so an
    agent needs no code of its own to answer: when the agent and port named by ``answer``
    send, the runtime also writes that output to the reply stream ``reply`` (a Redis
    instance of the graph and a key), where the caller waits for the correlation ``id``.
    ``deadline`` (wall-clock seconds) is when the caller stops waiting: a request not yet
    handled by then is skipped, not processed. ``priority`` orders the requests of one read.
    """

    id: str
    reply: tuple[str, str]  # (Redis instance, key of the reply stream)
    answer: str  # "AGENT.PORT" whose output is the answer
    deadline: float | None = None
    priority: int = 0

    def expired(self, now: float) -> bool:
        return self.deadline is not None and now > self.deadline


@dataclass(slots=True)
class Message(Generic[P]):
    """A payload with its envelope.

    ``payload`` is read-only where it holds arrays received from a stream: they are
    views on the received buffer, not copies. Copy an array before changing it.
    """

    payload: P
    id: str = field(default_factory=new_id)
    producer: str = ""
    created: float = field(default_factory=time.time)
    hops: tuple[Hop, ...] = ()
    schema: int = SCHEMA_VERSION
    request: Request | None = None  # set when the message answers a request from outside
    # Set on received messages only.
    port: str | None = None
    entry_id: str | None = None
    stream: str | None = None
    received: float | None = None

    def __getitem__(self, key: str) -> Any:
        return self.payload[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.payload.get(key, default)

    def __iter__(self) -> Iterator[str]:
        return iter(self.payload)

    @property
    def age(self) -> float:
        """Seconds since the origin of this message's chain was created."""
        return time.time() - self.created

    def derive(self, payload: Mapping[str, Any], *, producer: str, sent: float | None = None) -> Message:
        """A new message made from this one: it keeps the origin time and the request it
        answers, and extends the trace."""
        now = time.time() if sent is None else sent
        hop = Hop(producer, self.received if self.received is not None else now, now)
        return Message(payload, producer=producer, created=self.created, hops=self.hops + (hop,),
                       request=self.request)
