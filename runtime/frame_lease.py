"""Leases: which process holds a slot of a frame store (taken, or viewed), checkable from
any process of the host.

A lease is a small file beside the store that its process holds an flock on for as long
as it lives; a kill -9 releases the lock. A pid would not do: containers of one host each
count pids from 1, so a dead producer's pid may be a live process elsewhere.
"""

from __future__ import annotations

import atexit
import fcntl
import os
from pathlib import Path


def lease_path(store: Path, lease: int) -> Path:
    """The file of lease ``lease`` of the store at ``store``."""
    return store.with_name(f"{store.name}.lease-{lease:08x}")


class Lease:
    """This process's lease on a store: ``token`` is what slot headers record."""

    def __init__(self, store: Path):
        while True:
            self.token = int.from_bytes(os.urandom(4), "little") or 1
            self.path = lease_path(store, self.token)
            try:
                self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o660)
                break
            except FileExistsError:
                continue
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        self._open = True
        atexit.register(self.close)  # a clean exit leaves no lease file behind

    def close(self) -> None:
        if self._open:
            self._open = False
            self.path.unlink(missing_ok=True)
            os.close(self._fd)


def holder_gone(store: Path, lease: int) -> bool:
    """Whether the process that holds ``lease`` has ended (its lock released); its lease
    file is removed then."""
    path = lease_path(store, lease)
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)  # (releases the lock just taken, if it was)
    path.unlink(missing_ok=True)
    return True
