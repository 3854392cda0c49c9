"""Messages published and not yet acknowledged by the broker: pure bookkeeping, no I/O.

Each input message becomes one ``Publication``, numbered by the agent's counter when
it is taken. It stays here (and its message held in Redis) until the broker's PUBACK
for it arrives. A publication is either waiting to be sent, or in flight under a
message id of the current connection; when the connection dies every one in flight
goes back to waiting, in the order taken, to be sent again on the next connection.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass
class Publication(Generic[T]):
    seq: int  # the agent's counter: 1, 2, 3... within one run
    port: str
    item: T  # the held message
    body: object = None  # what is published for it, made once (see the agent)
    mids: set[int] = field(default_factory=set)  # message ids in flight; Sparkplug may need several
    sent: float | None = None  # when it was last sent


class Pending(Generic[T]):
    def __init__(self) -> None:
        self._all: OrderedDict[int, Publication[T]] = OrderedDict()  # by seq, in order taken
        self._waiting: deque[Publication[T]] = deque()
        self._by_mid: dict[int, Publication[T]] = {}
        self._seq = 0

    def __len__(self) -> int:
        return len(self._all)

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    @property
    def in_flight(self) -> int:
        return len(self._all) - len(self._waiting)

    def oldest_in_flight(self) -> float | None:
        """When the oldest publication still waiting for its PUBACK was sent (None: none is)."""
        for publication in self._all.values():
            if publication.mids:
                return publication.sent
        return None

    @property
    def next_seq(self) -> int:
        """The number the next ``add`` gives."""
        return self._seq + 1

    def add(self, port: str, item: T) -> Publication[T]:
        self._seq += 1
        publication = Publication(self._seq, port, item)
        self._all[publication.seq] = publication
        self._waiting.append(publication)
        return publication

    def to_send(self) -> Iterator[Publication[T]]:
        """The waiting publications, oldest first; each is taken off the waiting list as it
        is yielded and must be given to ``sent``."""
        while self._waiting:
            yield self._waiting.popleft()

    def sent(self, publication: Publication[T], mids: Iterable[int], now: float) -> None:
        publication.mids = set(mids)
        publication.sent = now
        for mid in publication.mids:
            self._by_mid[mid] = publication

    def unsent(self, publication: Publication[T]) -> None:
        """A publication taken by ``to_send`` that could not go out: first in line again."""
        self._waiting.appendleft(publication)

    def acked(self, mids: Iterable[int]) -> list[Publication[T]]:
        """The publications whose every message the broker now holds, in the order taken."""
        done = []
        for mid in mids:
            publication = self._by_mid.pop(mid, None)
            if publication is None:
                continue  # a birth certificate's, or of a connection already dropped
            publication.mids.discard(mid)
            if not publication.mids:
                done.append(publication)
                del self._all[publication.seq]
        return sorted(done, key=lambda p: p.seq)

    def connection_lost(self) -> int:
        """Everything in flight waits again, in the order taken; returns how many."""
        self._by_mid.clear()
        for publication in self._all.values():
            publication.mids.clear()
        self._waiting = deque(self._all.values())
        return len(self._waiting)
