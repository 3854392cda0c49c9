"""A part's folder on disk, written so that a crash leaves either all of it or a leftover.

The files are written into a fresh folder under ``tmp/``, each flushed to disk
(fsync), and the folder is then renamed to its place under ``parts/`` in one step and
its parent directory synced. Only then does the index get the part's row. What a crash
leaves behind (a folder in ``tmp/``, or a folder under ``parts/`` that no row names) is
removed at the next start by ``leftovers``.
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from collections.abc import Mapping
from pathlib import Path

PARTS = "parts"
TMP = "tmp"


def safe_name(text: str) -> str:
    """A file name made from a port name: letters, digits, dot, dash and underscore only."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", text) or "_"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


class PartFolders:
    """The ``parts/`` tree of one archive directory."""

    def __init__(self, root: Path):
        self.root = root
        (root / PARTS).mkdir(parents=True, exist_ok=True)
        (root / TMP).mkdir(exist_ok=True)

    def write(self, relpath: str, files: Mapping[str, bytes]) -> int:
        """Put ``files`` (name -> content) in the folder ``relpath``, all or nothing; returns their size."""
        tmp = self.root / TMP / uuid.uuid4().hex
        tmp.mkdir()
        for name, data in files.items():
            _write_synced(tmp / name, data)
        _fsync_dir(tmp)
        final = self.root / relpath
        day = final.parent
        if not day.exists():
            day.mkdir(parents=True)
            _fsync_dir(day.parent)
        if final.exists():  # a crash's leftover of this very part, its row never committed
            shutil.rmtree(final)
        os.rename(tmp, final)
        _fsync_dir(day)
        return sum(len(d) for d in files.values())

    def replace(self, relpath: str, name: str, data: bytes) -> int:
        """Replace one file of a stored part in one step (a record that gained its PLC result)."""
        folder = self.root / relpath
        tmp = folder / f".{name}.{uuid.uuid4().hex}.tmp"
        _write_synced(tmp, data)
        os.replace(tmp, folder / name)
        _fsync_dir(folder)
        return self.size(relpath)

    def size(self, relpath: str) -> int:
        folder = self.root / relpath
        return sum(p.stat().st_size for p in folder.iterdir() if p.is_file())

    def remove(self, relpath: str) -> None:
        folder = self.root / relpath
        shutil.rmtree(folder, ignore_errors=True)
        try:
            folder.parent.rmdir()  # the day's folder, once empty
        except OSError:
            pass

    def leftovers(self, known: set[str]) -> list[str]:
        """Folders a crash left: everything in ``tmp/``, and part folders no index row names."""
        found = [f"{TMP}/{p.name}" for p in (self.root / TMP).iterdir()]
        for day in sorted((self.root / PARTS).iterdir()):
            if not day.is_dir():
                found.append(f"{PARTS}/{day.name}")
                continue
            for folder in sorted(day.iterdir()):
                relpath = f"{PARTS}/{day.name}/{folder.name}"
                if relpath not in known:
                    found.append(relpath)
                elif folder.is_dir():
                    found += [f"{relpath}/{p.name}" for p in folder.iterdir() if p.name.endswith(".tmp")]
        return found

    def discard(self, relpath: str) -> None:
        """Remove a leftover, file or folder."""
        path = self.root / relpath
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        parent = path.parent
        if parent.parent == self.root / PARTS:
            try:
                parent.rmdir()
            except OSError:
                pass
