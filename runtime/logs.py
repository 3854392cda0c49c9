"""Log output of graphrun processes: levels, text or JSON lines, and per-agent files.

An agent process logs to stderr, which the launcher reads and prints under the agent's
name; ``--log-format json`` makes each record one JSON object per line, for a log
shipper (Loki, Fluent Bit, journald) to index without parsing text. The launcher's
``--log-dir`` keeps what each replica wrote in its own rotating file (``AgentLogFile``):
the launcher writes it, so a crash's traceback and anything agent code printed are
kept as well as its log records.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]
LEVELS: tuple[str, ...] = ("DEBUG", "INFO", "WARNING", "ERROR")
FORMATS: tuple[str, ...] = ("text", "json")
FILE_MAX_BYTES = 10 << 20  # each agent's log file is rotated at this size...
FILE_BACKUPS = 5  # ...keeping this many older files: at most 60 MB per agent


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time (ISO 8601, UTC), level, agent, logger, message,
    and the exception's traceback when there is one."""

    def __init__(self, agent: str | None = None):
        super().__init__()
        self.agent = agent

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "agent": self.agent,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure(level: str, fmt: str = "text", *, agent: str | None = None) -> None:
    """Send every record at ``level`` or above to stderr, as text or JSON lines."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter(agent))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level, handlers=[handler], force=True)


class AgentLogFile:
    """The rotating file the launcher keeps of one replica's output, a line at a time."""

    def __init__(self, path: Path, *, max_bytes: int = FILE_MAX_BYTES, backups: int = FILE_BACKUPS):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._handler = logging.handlers.RotatingFileHandler(path, maxBytes=max_bytes, backupCount=backups,
                                                             encoding="utf-8")
        self._handler.setFormatter(logging.Formatter("%(message)s"))

    def write(self, line: str) -> None:
        self._handler.handle(logging.makeLogRecord({"msg": line, "levelno": logging.INFO}))

    def close(self) -> None:
        self._handler.close()
