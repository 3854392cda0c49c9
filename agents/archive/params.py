"""The archive agent's parameters, and where an archive lives by default."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, ByteSize, ConfigDict, Field


class RetentionParams(BaseModel):
    """What the archive keeps: the newest parts within both limits; older ones are deleted."""

    model_config = ConfigDict(extra="forbid")

    max_bytes: ByteSize = Field(
        ByteSize(20 * 1000**3), gt=0,
        description="most bytes of images and records kept, e.g. '20GB' or '500MiB'; the oldest parts go first",
    )
    max_age_days: float = Field(365.0, gt=0, description="parts older than this (by the part's time) are deleted")
    interval: float = Field(
        60.0, gt=0, description="seconds between checks of the age limit (size is checked at every store)"
    )


class ArchiveParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    directory: str | None = Field(
        None,
        description="where images, records and the index are kept; default: "
        "$XDG_DATA_HOME/graphrun/<graph>/<agent> (~/.local/share/graphrun/... without XDG_DATA_HOME); "
        "a relative path is taken from the agent's working directory",
    )
    join_timeout: float = Field(
        10.0, gt=0,
        description="seconds a part waits for its missing frames, verdicts and PLC result before it is settled "
        "with what arrived; longer than the PLC agent's join_timeout, so that its result is normally there",
    )
    max_open: int = Field(
        64, ge=1, description="parts held in memory at once (each with its images); a part beyond it settles the "
        "oldest open part early, with what arrived"
    )
    png_compression: int = Field(1, ge=0, le=9, description="PNG compression level: 1 is fast, 9 smallest")
    retention: RetentionParams = Field(default_factory=RetentionParams)


def default_directory(graph: str, agent: str, environ: dict[str, str] | None = None) -> Path:
    """``$XDG_DATA_HOME/graphrun/<graph>/<agent>``: the same place for the agent and for
    ``graphrun archive``, whatever their working directories."""
    env = os.environ if environ is None else environ
    base = env.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "graphrun" / graph / agent


def archive_directory(params: ArchiveParams, graph: str, agent: str) -> Path:
    """The directory an archive agent of ``graph`` named ``agent`` keeps its parts in."""
    if params.directory:
        return Path(params.directory).expanduser().resolve()
    return default_directory(graph, agent)
