"""The input side of client mode: data changes of subscribed nodes as ``values`` messages.

Changes arrive on asyncua's loop (``link.Change``, queued); the agent's thread turns them
into messages here: numbered (a gap or a repeat shows), filtered to rising edges where
the graph asks, and their values made plain (a DateTime as seconds since the epoch, an
OPC UA structure as its text) so that they travel on a stream.
"""

from __future__ import annotations

import datetime as dt
import queue
from collections.abc import Iterator, Mapping
from typing import Any

from .link import Change
from .params import Subscription


def plain(value: Any) -> Any:
    """``value`` as a stream payload can carry it."""
    if value is None or isinstance(value, (bool, int, float, str, bytes)):
        return value
    if isinstance(value, dt.datetime):
        return value.timestamp()
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return str(value)


class ChangeFeed:
    def __init__(self, subscriptions: Mapping[str, Subscription]):
        self.subscriptions = subscriptions
        self.sent = 0  # messages made since the agent started: each one's sequence
        self._last: dict[str, Any] = {}  # each subscription's last value, for rising edges

    def messages(self, changes: queue.Queue[Change]) -> Iterator[dict[str, Any]]:
        """A message per queued change worth sending, oldest first; empties the queue."""
        while True:
            try:
                change = changes.get_nowait()
            except queue.Empty:
                return
            spec = self.subscriptions.get(change.name)
            previous = self._last.get(change.name)
            self._last[change.name] = change.value
            if spec is not None and spec.rising and not (change.value and not previous):
                continue
            self.sent += 1
            value = plain(change.value)
            yield {"name": change.name, change.name: value, "value": value, "node": change.node,
                   "source_time": change.source_time, "server_time": change.server_time,
                   "sequence": self.sent, "timestamp": change.received}
