"""Operator events, asked for in the web server's threads and sent by the agent's own.

An agent sends on its outputs only from its own thread, so an acknowledgement or a
reset waits here for the agent's next ``tick``. The runner writes what a tick sent
right after that tick returns, before the next one runs: a request is answered at
the tick after the one that sent its event, when the event is in its stream.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

Send = Callable[[dict[str, Any], Any], None]  # (event, the message it is traced from or None)


@dataclass
class _Request:
    event: dict[str, Any]
    parent: Any
    done: threading.Event = field(default_factory=threading.Event)
    sent: bool = False


class DeskClosed(Exception):
    """The agent stopped before the event was sent."""


class OperatorDesk:
    """Hands events from any thread to the agent's tick, and tells the asker once they are written."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiting: list[_Request] = []  # not sent yet
        self._sent: list[_Request] = []  # sent in the last tick: written once the next one runs
        self._closed = False

    def submit(self, event: dict[str, Any], parent: Any = None, *, timeout: float = 10.0) -> None:
        """Blocks until the agent has sent ``event`` and the runner has written it.

        Raises DeskClosed if the agent stops first, TimeoutError if its ticks stall.
        """
        request = _Request(event, parent)
        with self._lock:
            if self._closed:
                raise DeskClosed("the HMI is stopping")
            self._waiting.append(request)
        if not request.done.wait(timeout):
            raise TimeoutError(f"the HMI's agent did not send the {event.get('event')} event within {timeout:.0f} s")
        if not request.sent:
            raise DeskClosed("the HMI stopped before the event was sent")

    def tick(self, send: Send) -> None:
        """In the agent's tick: confirms the last tick's events, sends the waiting ones."""
        with self._lock:
            written, self._sent = self._sent, []
            waiting, self._waiting = self._waiting, []
        for request in written:
            request.done.set()
        for request in waiting:
            send(request.event, request.parent)
            request.sent = True
        with self._lock:
            self._sent.extend(waiting)

    def close(self) -> None:
        """At stop: what was sent in the last tick is written by the runner's last flush; the rest fails."""
        with self._lock:
            self._closed = True
            pending, self._waiting, self._sent = self._sent + self._waiting, [], []
        for request in pending:
            request.done.set()
