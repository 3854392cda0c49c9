"""An archive directory: part folders plus their index, and the retention limits.

Every change goes in the order that keeps the index true after a crash at any point:
a new part's files are on disk before its row is committed; a deleted part's row is
committed away before its files go. Files no row names are removed by ``recover``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .files import PartFolders
from .index import Entry, Index
from .params import RetentionParams

RECORD = "part.json"
DAY = 86_400.0


def part_path(part_id: int, origin: float, when: float) -> str:
    """``parts/<UTC day of the part>/<part id>-<origin in microseconds>``."""
    day = datetime.fromtimestamp(when, timezone.utc).strftime("%Y-%m-%d")
    return f"parts/{day}/{part_id}-{round(origin * 1e6)}"


def record_bytes(record: Mapping[str, Any]) -> bytes:
    return json.dumps(record, indent=1, sort_keys=True, default=str).encode()


class Archive:
    """One archive directory, opened for writing by its agent."""

    def __init__(self, directory: Path, retention: RetentionParams, log: logging.Logger | None = None):
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.retention = retention
        self.log = log or logging.getLogger(__name__)
        self.folders = PartFolders(directory)
        self.index = Index(directory)

    def close(self) -> None:
        self.index.close()

    def recover(self) -> list[str]:
        """Remove what a crash left half-written: files and folders no index row names."""
        leftovers = self.folders.leftovers(self.index.paths())
        for relpath in leftovers:
            self.folders.discard(relpath)
        if leftovers:
            self.log.warning("removed %d leftover(s) of an interrupted write: %s", len(leftovers),
                             ", ".join(leftovers[:5]) + (" ..." if len(leftovers) > 5 else ""))
        return leftovers

    def find(self, part_id: int, origin: float) -> Entry | None:
        return self.index.get(part_id, origin)

    def put(self, record: dict[str, Any], files: Mapping[str, bytes], *, model_versions: str) -> Entry:
        """Store one part: its files (the record added as part.json), then its index row."""
        relpath = part_path(record["part_id"], record["origin"], record["time"])
        plc = record.get("plc")
        size = self.folders.write(relpath, {**files, RECORD: record_bytes(record)})
        entry = Entry(part_id=record["part_id"], origin=record["origin"], time=record["time"],
                      outcome=record["outcome"], label=record["label"], score=record["score"],
                      model_versions=model_versions, plc_sequence=None if plc is None else plc.get("sequence"),
                      path=relpath, bytes=size, stored=record["stored"], record=record)
        self.index.add(entry)
        return entry

    def add_result(self, entry: Entry, plc: Mapping[str, Any]) -> None:
        """A stored part's PLC result arrived after the part was settled: record it."""
        record = {**entry.record, "plc": dict(plc), "outcome": plc["outcome"], "time": plc.get("time", entry.time)}
        record["missing"] = [m for m in record.get("missing", []) if m != "plc result"]
        size = self.folders.replace(entry.path, RECORD, record_bytes(record))
        self.index.replace_record(entry, record, outcome=record["outcome"], time=record["time"],
                                  plc_sequence=plc.get("sequence"), bytes_=size)

    def prune(self, now: float | None = None) -> list[Entry]:
        """Delete the parts beyond the age limit, then the oldest until the size limit holds."""
        now = time.time() if now is None else now
        doomed = self.index.older_than(now - self.retention.max_age_days * DAY)
        total = self.index.total_bytes() - sum(e.bytes for e in doomed)
        if total > self.retention.max_bytes:
            gone = {(e.part_id, e.origin) for e in doomed}
            for entry in self.index.oldest():
                if total <= self.retention.max_bytes:
                    break
                if (entry.part_id, entry.origin) not in gone:
                    doomed.append(entry)
                    total -= entry.bytes
        if doomed:
            self.index.remove(doomed)  # rows first: a crash now leaves files, which recover() removes
            for entry in doomed:
                self.folders.remove(entry.path)
        return doomed
