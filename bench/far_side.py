"""A benchmark's far side (a PLC simulator, an MQTT subscriber) in a child process of its own.

The far side runs apart from the process that drives the benchmark, so that the two do not
compete for the interpreter lock and the figures measure the agent's path. The parent asks
over a pipe how many results have arrived (``count``) and, at the end, for all of them
(``stop``); the child answers with :func:`serve`, then sends what it recorded.
"""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Callable, Sized
from multiprocessing.connection import Connection
from typing import Any


class FarSide:
    """The parent's side: starts ``target(*args, conn)`` in a spawned process and waits until it is ready."""

    def __init__(self, target: Callable[..., None], args: tuple[Any, ...], *, what: str, limit: float = 120.0) -> None:
        self.what = what  # named in the errors: "the PLC simulator", "the subscriber"
        self.limit = limit
        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        self._process = context.Process(target=target, args=(*args, child), daemon=True)
        self._process.start()
        if self._conn.recv() != "ready":
            raise SystemExit(f"{what} did not start")

    def count(self) -> int:
        self._conn.send("count")
        return int(self._conn.recv())

    def wait(self, count: int, limit: float | None = None) -> None:
        """Until ``count`` results have arrived; a benchmark that loses results stops with why."""
        end = time.monotonic() + (self.limit if limit is None else limit)
        while (have := self.count()) < count:
            if time.monotonic() > end:
                raise SystemExit(f"only {have} of {count} results reached {self.what}")
            time.sleep(0.002)

    def stop(self) -> Any:
        """What the far side recorded, once it has stopped."""
        self._conn.send("stop")
        results = self._conn.recv()
        self._process.join(10)
        return results


def serve(conn: Connection, received: Sized) -> None:
    """The child's side: say it is ready, then answer each ``count`` with how many results it
    has until the parent says ``stop``; the caller then stops and sends what it recorded."""
    conn.send("ready")
    while conn.recv() == "count":
        conn.send(len(received))
