"""Signals that stop a process, turned into a call on another thread.

A Python signal handler runs on the main thread between two bytecodes, possibly while
that thread is inside ``Event.wait()`` or ``Event.set()`` of the very event the handler
would set. The event's lock is not re-entrant: the handler blocks on it for good, and
the process hangs (a launcher that never ended after Ctrl-C, holding its agents). So the
handler here does nothing: the interpreter's C-level handler writes the signal number to
a wakeup pipe, and a thread of ours reads it and makes the call, taking any lock it likes.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _noted(_signum: int, _frame: object) -> None:
    """The Python-level handler: nothing (the wakeup pipe carries the signal)."""


@contextmanager
def calling_on(on_signal: Callable[[int], None], signals: Iterable[int] = STOP_SIGNALS) -> Iterator[None]:
    """While the block runs, each of ``signals`` calls ``on_signal(signum)`` on a thread of its own.

    Only the main thread receives signals: elsewhere the block runs with the handlers as they are.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    wanted = {int(s) for s in signals}
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    previous_fd = signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
    previous = {s: signal.signal(s, _noted) for s in wanted}

    def relay() -> None:
        while True:
            try:
                data = os.read(read_end, 64)
            except OSError:
                return
            if not data:
                return  # the block ended
            for signum in data:
                if signum in wanted:
                    on_signal(signum)

    thread = threading.Thread(target=relay, name="signals", daemon=True)
    thread.start()
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        signal.set_wakeup_fd(previous_fd)
        os.close(write_end)
        thread.join(5)
        os.close(read_end)
