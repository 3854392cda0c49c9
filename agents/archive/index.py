"""The archive's index: one sqlite3 row per stored part, queryable by part id, time and label.

sqlite3 is in the standard library, keeps its index in one file, and its write-ahead
log lets ``graphrun archive`` read while the agent writes. A part's row is committed in
one transaction after its files are on disk (synchronous=FULL: the commit is on disk
before the part's messages are acknowledged), so the index never names a half-written
part; files that no row names are a crash's leftovers, removed when the agent starts.

A part is identified by its part id and its origin (the time its first message was
made, which every redelivered copy repeats): the same part delivered twice is one
entry, while a part id given again after the line's counter was reset is a new one.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS parts (
    entry INTEGER PRIMARY KEY AUTOINCREMENT,
    part_id INTEGER NOT NULL,
    origin REAL NOT NULL,         -- when the part's first message was made (seconds since the epoch)
    time REAL NOT NULL,           -- the part's time: the PLC write, else its first frame
    outcome TEXT NOT NULL,        -- what the PLC was given: defective, incomplete (or none: no PLC result)
    label TEXT NOT NULL,          -- the defect kind, or ok
    score REAL NOT NULL,
    model_versions TEXT NOT NULL, -- the distinct model:version of its verdicts, comma separated
    plc_sequence INTEGER,         -- the PLC's sequence counter for the part; NULL: no PLC result yet
    path TEXT NOT NULL UNIQUE,    -- the part's folder, relative to the archive directory
    bytes INTEGER NOT NULL,
    stored REAL NOT NULL,
    record TEXT NOT NULL,         -- the part's record (JSON), as in its folder's part.json
    UNIQUE (part_id, origin)
);
CREATE INDEX IF NOT EXISTS parts_time ON parts (time);
CREATE INDEX IF NOT EXISTS parts_label ON parts (label, time);
"""


@dataclass(frozen=True)
class Entry:
    """One stored part, as the index has it."""

    part_id: int
    origin: float
    time: float
    outcome: str
    label: str
    score: float
    model_versions: str
    plc_sequence: int | None
    path: str
    bytes: int
    stored: float
    record: dict[str, Any]

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Entry:
        values = {k: row[k] for k in row.keys() if k != "entry"}
        values["record"] = json.loads(values["record"])
        return cls(**values)


COLUMNS = "part_id, origin, time, outcome, label, score, model_versions, plc_sequence, path, bytes, stored, record"


class Index:
    """The sqlite3 index of one archive directory."""

    FILE = "index.sqlite3"

    def __init__(self, directory: Path, *, readonly: bool = False):
        self.file = directory / self.FILE
        if readonly:
            if not self.file.exists():
                raise FileNotFoundError(f"no archive index at {self.file}")
            self.db = sqlite3.connect(f"file:{self.file}?mode=ro", uri=True, timeout=10)
            if self.db.execute("SELECT 1 FROM sqlite_master WHERE name = 'parts'").fetchone() is None:
                # The agent made the file an instant ago and is creating its table: nothing stored yet.
                self.db.close()
                self.db = sqlite3.connect(":memory:")
                self.db.executescript(SCHEMA)
        else:
            self.db = sqlite3.connect(self.file, timeout=10)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")  # a commit is on disk before messages are acknowledged
            self.db.executescript(SCHEMA)
        self.db.row_factory = sqlite3.Row

    def close(self) -> None:
        self.db.close()

    # --- writing ---------------------------------------------------------------------------

    def add(self, entry: Entry) -> None:
        """Commit one part's row (its files are on disk already)."""
        with self.db:
            self.db.execute(
                f"INSERT INTO parts ({COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                (entry.part_id, entry.origin, entry.time, entry.outcome, entry.label, entry.score,
                 entry.model_versions, entry.plc_sequence, entry.path, entry.bytes, entry.stored,
                 json.dumps(entry.record, sort_keys=True, default=str)),
            )

    def replace_record(self, entry: Entry, record: dict[str, Any], *, outcome: str, time: float,
                       plc_sequence: int | None, bytes_: int) -> None:
        """Update a stored part whose PLC result came after it was stored."""
        with self.db:
            self.db.execute(
                "UPDATE parts SET record = ?, outcome = ?, time = ?, plc_sequence = ?, bytes = ? "
                "WHERE part_id = ? AND origin = ?",
                (json.dumps(record, sort_keys=True, default=str), outcome, time, plc_sequence, bytes_,
                 entry.part_id, entry.origin),
            )

    def remove(self, entries: list[Entry]) -> None:
        """Delete rows in one transaction (their folders are deleted after the commit)."""
        with self.db:
            self.db.executemany("DELETE FROM parts WHERE part_id = ? AND origin = ?",
                                [(e.part_id, e.origin) for e in entries])

    # --- reading ---------------------------------------------------------------------------

    def get(self, part_id: int, origin: float) -> Entry | None:
        row = self.db.execute(f"SELECT {COLUMNS} FROM parts WHERE part_id = ? AND origin = ?",
                              (part_id, origin)).fetchone()
        return None if row is None else Entry.from_row(row)

    def paths(self) -> set[str]:
        return {row[0] for row in self.db.execute("SELECT path FROM parts")}

    def total_bytes(self) -> int:
        return int(self.db.execute("SELECT COALESCE(SUM(bytes), 0) FROM parts").fetchone()[0])

    def count(self) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM parts").fetchone()[0])

    def older_than(self, time: float) -> list[Entry]:
        rows = self.db.execute(f"SELECT {COLUMNS} FROM parts WHERE time < ? ORDER BY time", (time,))
        return [Entry.from_row(r) for r in rows]

    def oldest(self) -> Iterator[Entry]:
        for row in self.db.execute(f"SELECT {COLUMNS} FROM parts ORDER BY time, entry"):
            yield Entry.from_row(row)

    def query(self, *, part_id: int | None = None, label: str | None = None, outcome: str | None = None,
              since: float | None = None, until: float | None = None, limit: int | None = None) -> list[Entry]:
        """Stored parts matching every condition given, oldest first (the newest ``limit``)."""
        where, args = [], []
        for column, op, value in (("part_id", "=", part_id), ("label", "=", label), ("outcome", "=", outcome),
                                  ("time", ">=", since), ("time", "<", until)):
            if value is not None:
                where.append(f"{column} {op} ?")
                args.append(value)
        sql = f"SELECT {COLUMNS} FROM parts"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY time DESC, entry DESC"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        return [Entry.from_row(r) for r in self.db.execute(sql, args)][::-1]
