"""Frames in shared memory on one host: fixed-size slots in a file under /dev/shm.

Why: a megabyte frame sent through Redis is copied into the server and out again once
per reader. Written once into a slot here, it travels as a small reference in the
stream entry (``Ref``), and every reader on the host maps the same bytes.

The file is a header page (magic, layout, a random store id), a table of slot headers,
then the slots. A slot header holds the slot's state, its generation (bumped each time
the slot is taken, so a reference to an older use is recognised), the length and xxh3
checksum of what was written, which process took it and when (its ``frame_lease``), once
the producer knows it the stream entry that refers to it (stream key and entry id), and
the pins of the processes that still hold arrays on the slot. Taking a slot
happens under an fcntl lock on the file, so producers in several processes share one
store; reading takes no lock: the generation and the checksum are checked instead.
(``flock``, not ``lockf``: a lock of each open file, so that two stores opened in one
process, by two agents run as threads, exclude each other too.)

This module knows nothing of Redis: when a written slot may be reused is decided by the
caller from the stream's consumer groups (``frame_path``) and applied with ``free_before``.

Pins keep a slot whose entry every reader has acknowledged from reuse while an array on
it lives in some process (an agent that keeps the last frame for a preview, say): a view
pins its slot, and the pin goes when the last array on it is garbage. So an agent cannot
tell the paths apart: an array it keeps keeps its pixels. A process that dies drops its
pins with its lease; a slot no pin entry is left for is read as a copy instead.
"""

from __future__ import annotations

import fcntl
import mmap
import os
import socket
import struct
import threading
import time
import uuid
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import xxhash

from .errors import FrameStoreError, FrameUnavailable
from .frame_lease import Lease, holder_gone

DIRECTORY = Path(os.environ.get("GRAPHRUN_FRAME_DIR", "/dev/shm"))
MAGIC = b"GRFRAME1"
PAGE = 4096
SLOT_HEADER = 256
_STORE = struct.Struct("<8sQQ16s")  # magic, slot size, slots, store id
# state, lease, generation, length, checksum, taken at, entry ms, entry seq, key length; then the key
_SLOT = struct.Struct("<IIQQQdQQH")
PIN_OFFSET = 128  # in a slot header: PINS entries of (lease, arrays alive)
PINS = 8
_PIN = struct.Struct("<II")
KEY_MAX = PIN_OFFSET - _SLOT.size
FREE, TAKEN, WRITTEN = 0, 1, 2


def _machine() -> str:
    """This machine as references name it: its host name (for messages) and the kernel's
    boot id, which every container of the host shares while their host names differ."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        boot = ""
    return f"{socket.gethostname()}@{boot}" if boot else socket.gethostname()


HOST = _machine()


@dataclass(frozen=True, slots=True)
class Ref:
    """Where one array's bytes are: the store (file name and id, host), slot, generation,
    length and checksum. Small enough to travel in a stream entry's header."""

    name: str
    store: str
    host: str
    slot: int
    generation: int
    length: int
    checksum: int

    def encode(self) -> list[Any]:
        return [self.name, self.store, self.host, self.slot, self.generation, self.length, self.checksum]

    @classmethod
    def decode(cls, raw: Any) -> Ref:
        try:
            name, store, host, slot, generation, length, checksum = raw
            return cls(str(name), str(store), str(host), int(slot), int(generation), int(length), int(checksum))
        except (TypeError, ValueError) as exc:
            raise FrameUnavailable(f"malformed shared-memory frame reference {raw!r}: {exc}") from None


def remove(path: Path) -> None:
    """Remove a store's file and its lease files (a graph taken down, a test's store)."""
    for lease in path.parent.glob(f"{path.name}.lease-*"):
        lease.unlink(missing_ok=True)
    path.unlink(missing_ok=True)
    forget(path.name)


class FrameStore:
    """One store file, mapped. ``writable`` stores take and free slots; any store reads."""

    def __init__(self, path: Path | str, *, writable: bool):
        path = self.path = Path(path)
        self.name = path.name
        flags = os.O_RDWR if writable else os.O_RDONLY
        try:
            self._fd = os.open(path, flags)
        except OSError as exc:
            raise FrameStoreError(f"cannot open frame store {path}: {exc.strerror or exc}") from None
        header = os.pread(self._fd, _STORE.size, 0)
        if len(header) < _STORE.size or header[:8] != MAGIC:
            os.close(self._fd)
            raise FrameStoreError(f"{path} is not a graphrun frame store (remove it, or name another store)")
        _, self.slot_size, self.slots, store_id = _STORE.unpack(header)
        self.store_id = store_id.hex()
        self._data = _data_offset(self.slots)
        size = self._data + self.slots * self.slot_size
        access = mmap.ACCESS_WRITE if writable else mmap.ACCESS_READ
        self._mm = mmap.mmap(self._fd, size, access=access)
        self._view = memoryview(self._mm)  # read-only when mapped for reading
        self.writable = writable
        self._cursor = 0
        self._lease: Lease | None = None  # taken at the first put or pin
        # flock does not exclude threads sharing this file. Reentrant, and the owner known: an
        # array's finalizer (an unpin) may run inside a locked section of the same thread.
        self._thread_lock = threading.RLock()
        self._lock_owner: int | None = None
        self._deferred: list[tuple[int, int]] = []  # unpins that came inside a locked section
    @classmethod
    def create(cls, name: str, *, size: int, slot_size: int, directory: Path | None = None) -> FrameStore:
        """The store ``name`` with ``size`` bytes of slots of ``slot_size``, made if missing.

        An existing store of the same name and layout is opened as it is (its slots may
        hold frames still pending); one of another layout is an error, not overwritten.
        """
        slots = size // slot_size
        if slots < 1:
            raise FrameStoreError(f"frame store {name!r}: size {size} holds no slot of {slot_size} bytes")
        path = (directory or DIRECTORY) / name
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o660)
        except OSError as exc:
            raise FrameStoreError(f"cannot make frame store {path}: {exc.strerror or exc}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if os.fstat(fd).st_size == 0:
                total = _data_offset(slots) + slots * slot_size
                try:
                    os.posix_fallocate(fd, 0, total)  # no SIGBUS later: the room is there now
                except OSError as exc:
                    os.ftruncate(fd, 0)
                    raise FrameStoreError(f"no room for frame store {path} ({total} bytes): "
                                          f"{exc.strerror or exc}") from None
                os.pwrite(fd, _STORE.pack(MAGIC, slot_size, slots, uuid.uuid4().bytes), 0)
            else:
                magic, have_size, have_slots, _ = _STORE.unpack(os.pread(fd, _STORE.size, 0))
                if magic != MAGIC or (have_size, have_slots) != (slot_size, slots):
                    raise FrameStoreError(
                        f"frame store {path} exists with another layout ({have_slots} slots of {have_size} "
                        f"bytes, wanted {slots} of {slot_size}): stop its agents and remove the file")
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
        return cls(path, writable=True)

    def close(self) -> None:
        if self._lease is not None:
            self._lease.close()
        self._view.release()
        self._mm.close()
        os.close(self._fd)

    # --- slot headers -------------------------------------------------------------

    def _header(self, slot: int) -> tuple[int, ...]:
        return _SLOT.unpack_from(self._mm, _header_offset(slot))

    def _set_state(self, slot: int, state: int) -> None:
        struct.pack_into("<I", self._mm, _header_offset(slot), state)

    @contextmanager
    def _locked(self) -> Iterator[None]:
        with self._thread_lock:
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            self._lock_owner = threading.get_ident()
            try:
                yield
            finally:
                self._lock_owner = None
                deferred, self._deferred = self._deferred, []
                for slot, token in deferred:
                    self._drop_pin(slot, token)
                fcntl.flock(self._fd, fcntl.LOCK_UN)

    # --- writing --------------------------------------------------------------------

    def put(self, data: Any) -> Ref | None:
        """Write ``data`` (a bytes-like of at most ``slot_size``) into a free slot; None when
        no slot is free or it does not fit: the caller then sends it inline."""
        data = memoryview(data).cast("B")
        n = len(data)
        if n > self.slot_size:
            return None
        lease = self._own_lease()
        with self._locked():
            slot = self._take()
            if slot is None:
                return None
            header = self._header(slot)
            generation = header[2] + 1
            _SLOT.pack_into(self._mm, _header_offset(slot), TAKEN, lease.token, generation, n, 0, time.time(),
                            0, 0, 0)
        start = self._data + slot * self.slot_size
        self._view[start:start + n] = data
        checksum = xxhash.xxh3_64_intdigest(data)
        struct.pack_into("<Q", self._mm, _header_offset(slot) + 24, checksum)
        return Ref(self.name, self.store_id, HOST, slot, generation, n, checksum)

    def _take(self) -> int | None:
        for i in range(self.slots):
            slot = (self._cursor + i) % self.slots
            if struct.unpack_from("<I", self._mm, _header_offset(slot))[0] == FREE:
                self._cursor = (slot + 1) % self.slots
                return slot
        return None

    def record(self, ref: Ref, key: str, entry_id: str) -> None:
        """The slot of ``ref`` is referred to by entry ``entry_id`` of stream ``key``: from now
        on it is freed by ``free_before`` once every reader is past that entry."""
        raw = key.encode()[:KEY_MAX]
        ms, _, seq = entry_id.partition("-")
        with self._locked():
            header = self._header(ref.slot)
            if header[2] != ref.generation or header[0] == FREE:
                return  # freed meanwhile (by abandon rules): nothing to record
            if header[0] == WRITTEN and (header[6], header[7]) >= (int(ms), int(seq or 0)):
                return  # written twice (a flush sent again): the slot stays until the later entry is done
            offset = _header_offset(ref.slot)
            struct.pack_into("<QQH", self._mm, offset + 40, int(ms), int(seq or 0), len(raw))
            self._mm[offset + _SLOT.size:offset + _SLOT.size + len(raw)] = raw
            self._set_state(ref.slot, WRITTEN)

    def release(self, ref: Ref) -> bool:
        """Give back a slot taken by ``put`` whose entry was never written; True if freed."""
        with self._locked():
            header = self._header(ref.slot)
            if header[0] == TAKEN and header[2] == ref.generation:
                self._set_state(ref.slot, FREE)
                return True
        return False

    # --- freeing ----------------------------------------------------------------------

    def written(self) -> dict[str, list[tuple[int, int]]]:
        """Stream key -> ids of the entries whose frames are in slots, for deciding reuse."""
        out: dict[str, list[tuple[int, int]]] = {}
        for slot in range(self.slots):
            state, *_rest = header = self._header(slot)
            if state == WRITTEN:
                out.setdefault(self._key(slot, header[8]), []).append((header[6], header[7]))
        return out

    def _key(self, slot: int, length: int) -> str:
        offset = _header_offset(slot) + _SLOT.size
        return bytes(self._mm[offset:offset + length]).decode(errors="replace")

    def free_before(self, key: str, boundary: tuple[int, int]) -> int:
        """Free the slots of stream ``key``'s entries before ``boundary`` (every reader has
        read and acknowledged them, or they were trimmed); the number freed."""
        freed = 0
        with self._locked():
            for slot in range(self.slots):
                header = self._header(slot)
                if (header[0] == WRITTEN and (header[6], header[7]) < boundary and self._key(slot, header[8]) == key
                        and not self._pinned(slot)):
                    self._set_state(slot, FREE)
                    freed += 1
        return freed

    def free_abandoned(self, stale_after: float, *, now: float | None = None) -> int:
        """Free slots taken by a process that died before its entry was recorded, once
        ``stale_after`` seconds have passed since (its entry, if written, had that long to
        be read); the number freed."""
        now = time.time() if now is None else now
        freed = 0
        with self._locked():
            for slot in range(self.slots):
                state, lease, _gen, _n, _sum, taken = self._header(slot)[:6]
                if (state == TAKEN and now - taken >= stale_after and holder_gone(self.path, lease)
                        and not self._pinned(slot)):
                    self._set_state(slot, FREE)
                    freed += 1
        return freed

    def free(self) -> int:
        """How many slots are free (read without the lock: a hint)."""
        return sum(1 for slot in range(self.slots)
                   if struct.unpack_from("<I", self._mm, _header_offset(slot))[0] == FREE)

    def usage(self) -> dict[str, int]:
        """How many slots are free, taken (entry not yet written) and written."""
        counts = [0, 0, 0]
        for slot in range(self.slots):
            counts[self._header(slot)[0]] += 1
        return {"slots": self.slots, "free": counts[FREE], "taken": counts[TAKEN], "written": counts[WRITTEN]}

    # --- reading ------------------------------------------------------------------------

    # --- pins ------------------------------------------------------------------------

    def _own_lease(self) -> Lease:
        if self._lease is None:
            self._lease = Lease(self.path)
        return self._lease

    def _pins(self, slot: int) -> Iterator[tuple[int, int, int]]:
        for i in range(PINS):
            offset = _header_offset(slot) + PIN_OFFSET + i * _PIN.size
            yield (offset, *_PIN.unpack_from(self._mm, offset))

    def _pinned(self, slot: int) -> bool:
        """Whether a live process holds arrays on ``slot``; the pins of dead ones are
        dropped. (Under the lock.)"""
        pinned = False
        for offset, lease, count in self._pins(slot):
            if count and holder_gone(self.path, lease):
                _PIN.pack_into(self._mm, offset, 0, 0)
            elif count:
                pinned = True
        return pinned

    def _pin(self, ref: Ref) -> bool:
        """Keep ``ref``'s slot from reuse until ``_unpin``: True if pinned, False if the slot
        is free (done with everywhere, not yet reused) or has no pin entry left. A slot
        taken again since is FrameUnavailable."""
        lease = self._own_lease()
        with self._locked():
            state, _lease, generation = self._header(ref.slot)[:3]
            if generation != ref.generation:
                raise FrameUnavailable(f"slot {ref.slot} of {self.path} was reused: generation {generation}, "
                                       f"the entry refers to {ref.generation}")
            if state == FREE:
                return False
            empty = None
            for offset, holder, count in self._pins(ref.slot):
                if count and holder == lease.token:
                    _PIN.pack_into(self._mm, offset, holder, count + 1)
                    return True
                if not count and empty is None:
                    empty = offset
            if empty is None:
                return False
            _PIN.pack_into(self._mm, empty, lease.token, 1)
            return True

    def _unpin(self, slot: int, token: int) -> None:
        """Drop one pin (an array's finalizer: in any thread, at any allocation)."""
        if self._lock_owner == threading.get_ident():  # inside this thread's locked section
            self._deferred.append((slot, token))  # applied when the section ends
            return
        with self._locked():
            self._drop_pin(slot, token)

    def _drop_pin(self, slot: int, token: int) -> None:
        for offset, holder, count in self._pins(slot):
            if count and holder == token:
                _PIN.pack_into(self._mm, offset, holder if count > 1 else 0, count - 1)
                return

    # --- reading ------------------------------------------------------------------------

    def view(self, ref: Ref) -> np.ndarray:
        """The bytes ``ref`` refers to: a read-only uint8 array on the slot itself, no copy,
        that keeps the slot from reuse while it (or any array made from it) lives; a
        verified copy when the slot cannot be pinned. FrameUnavailable if the slot has been
        reused or its bytes do not match the checksum."""
        if ref.store != self.store_id:
            raise FrameUnavailable(f"frame store {self.path} was made anew since slot {ref.slot} was written "
                                   f"(store {ref.store}, now {self.store_id}): the frame is gone")
        if not 0 <= ref.slot < self.slots or not 0 <= ref.length <= self.slot_size:
            raise FrameUnavailable(f"frame reference out of range for {self.path}: slot {ref.slot}, "
                                   f"{ref.length} bytes ({self.slots} slots of {self.slot_size})")
        pinned = self._pin(ref) if self.writable else False
        if not pinned and self._header(ref.slot)[2] != ref.generation:
            raise FrameUnavailable(f"slot {ref.slot} of {self.path} was reused: generation "
                                   f"{self._header(ref.slot)[2]}, the entry refers to {ref.generation}")
        start = self._data + ref.slot * self.slot_size
        data = self._view[start:start + ref.length].toreadonly()
        if not pinned:
            data = memoryview(bytes(data))  # the slot may be reused: a copy, checked below
        checksum = xxhash.xxh3_64_intdigest(data)
        if not pinned and self._header(ref.slot)[2] != ref.generation:
            raise FrameUnavailable(f"slot {ref.slot} of {self.path} was reused while it was read")
        if checksum != ref.checksum:
            if pinned:
                self._unpin(ref.slot, self._own_lease().token)
            raise FrameUnavailable(f"slot {ref.slot} of {self.path} does not match its checksum "
                                   f"({checksum:x}, the entry says {ref.checksum:x})")
        array = np.frombuffer(data, np.uint8)
        if pinned:
            weakref.finalize(array, self._unpin, ref.slot, self._own_lease().token)
        return array


def _header_offset(slot: int) -> int:
    return PAGE + slot * SLOT_HEADER


def _data_offset(slots: int) -> int:
    return PAGE + -(-slots * SLOT_HEADER // PAGE) * PAGE


# --- reading by reference, in any process of the host ----------------------------------

_readers: dict[str, FrameStore] = {}  # file name -> the store mapped for reading


def view(ref: Ref, *, directory: Path | None = None) -> np.ndarray:
    """The bytes of ``ref`` (``FrameStore.view``), from its store as this process maps it
    for reading (once)."""
    if ref.host.rpartition("@")[2] != HOST.rpartition("@")[2]:
        raise FrameUnavailable(f"the frame is in shared memory on host {ref.host.partition('@')[0]!r}, not on this "
                               f"host ({HOST.partition('@')[0]!r}); a reader elsewhere needs the producer to write "
                               "frames inline")
    store = _readers.get(ref.name)
    if store is None or (store.store_id != ref.store and _renewed(store)):
        path = (directory or DIRECTORY) / ref.name
        if not path.exists():
            raise FrameUnavailable(f"frame store {path} does not exist on this host: the frame is gone")
        try:
            store = FrameStore(path, writable=True)  # headers writable: pins
        except FrameStoreError:
            store = FrameStore(path, writable=False)  # no write permission: copies, not pins
        _readers[ref.name] = store
    return store.view(ref)


def forget(name: str) -> None:
    """Unmap the store ``name`` in this process once no array views it any more (its file is
    gone): the next reference to that name maps the file anew."""
    _readers.pop(name, None)


def _renewed(store: FrameStore) -> bool:
    """Whether the file under ``store``'s name is another store now (made anew)."""
    try:
        with open(store.path, "rb") as file:
            header = file.read(_STORE.size)
    except OSError:
        return False
    return len(header) == _STORE.size and _STORE.unpack(header)[3].hex() != store.store_id
