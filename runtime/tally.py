"""What a run did, in one line: what ``graphrun run`` prints when it stops.

The runtime knows nothing of parts or rejects. An agent names what it counts in its
status under ``counts`` (name -> number: the Modbus agent's parts written to the PLC and
its rejects, say); the line adds them up over the agent's replicas. Beside them, from
every replica's health record, the messages whose handling failed and those sent to a
dead-letter stream, and the restarts the launcher made:

    graphrun: run of 2 min 5 s: plc: 480 parts, 37 rejects, 0 incomplete; 0 errors, 0 dead letters, 0 restarts

Records older than the run are left out: a Redis with an append-only file keeps the
records of the run before, and their counts are not this run's. A replica's counters
start again when it restarts, so after restarts the counts are those since each replica's
last start (the line says so).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import redis

from . import transport
from .graph import Graph
from .health import health_key

COUNTS = "counts"  # the status key under which an agent names what it counts


@dataclass
class RunTally:
    """The counts of one run, per agent, and its errors, dead letters and restarts."""

    seconds: float
    counts: dict[str, dict[str, int]] = field(default_factory=dict)  # agent -> name -> number
    errors: int = 0
    dead_letters: int = 0
    restarts: int = 0
    unread: dict[str, list[str]] = field(default_factory=dict)  # why -> agents whose records it kept unread

    def line(self) -> str:
        counted = "; ".join(f"{agent}: " + ", ".join(f"{n} {name}" for name, n in names.items())
                            for agent, names in self.counts.items() if names)
        totals = (f"{self.errors} {plural(self.errors, 'error')}, {self.dead_letters} "
                  f"{plural(self.dead_letters, 'dead letter')}, {self.restarts} {plural(self.restarts, 'restart')}")
        text = f"run of {duration(self.seconds)}: {counted + '; ' if counted else ''}{totals}"
        if self.restarts and counted:
            text += " (counts since each replica's last start)"
        if self.unread:
            missing = "; ".join(f"{', '.join(agents)}: {why}" for why, agents in self.unread.items())
            text += f" (not counted: {missing})"
        return text


def plural(n: int, word: str) -> str:
    return word if n == 1 else f"{word}s"


def duration(seconds: float) -> str:
    """``45 s``, ``2 min 5 s``, ``1 h 3 min``."""
    whole = int(round(seconds))
    if whole < 60:
        return f"{whole} s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes} min {secs} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def add_counts(total: dict[str, int], counts: Any) -> None:
    """Add a record's ``counts`` to ``total``; what is not a number is not counted."""
    if not isinstance(counts, Mapping):
        return
    for name, value in counts.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            total[str(name)] = total.get(str(name), 0) + int(value)


def tally(graph: Graph, agents: Iterable[str], clients: Mapping[str, redis.Redis], *, since: float,
          seconds: float, restarts: int = 0) -> RunTally:
    """Sum the health records that ``agents`` wrote since ``since`` (epoch seconds)."""
    result = RunTally(seconds=seconds, restarts=restarts)
    away: dict[str, str] = {}  # instance -> why it could not be read: asked once, not once per agent
    for agent in agents:
        home = graph.home_redis(agent)
        client = clients.get(home)
        if client is None:
            away.setdefault(home, f"Redis {home} not known here")
        if home in away:
            result.unread.setdefault(away[home], []).append(agent)
            continue
        try:
            raw = client.hgetall(health_key(graph.name, agent))  # type: ignore[union-attr]
        except (*transport.CONNECTION_ERRORS, redis.ResponseError) as exc:
            away[home] = f"Redis {home}: {exc}"
            result.unread.setdefault(away[home], []).append(agent)
            continue
        names: dict[str, int] = {}
        for value in raw.values():
            record = json.loads(value)
            if float(record.get("time", 0)) < since:
                continue
            result.errors += int(record.get("failed", 0))
            result.dead_letters += int(record.get("dead_lettered", 0))
            add_counts(names, record.get(COUNTS))
        result.counts[agent] = names
    return result
