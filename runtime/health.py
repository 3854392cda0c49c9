"""Health: what a running agent replica tells the world about itself.

Each replica writes a JSON record into the hash ``graphrun:health:<graph>:<agent>``
(field: its consumer name) on its home Redis every few seconds, with a time to live,
so a stale replica disappears by itself. ``graphrun status`` reads these records.

Owner: the runner's handling thread.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import redis

from . import transport
from .graph import InputBinding

log = logging.getLogger("graphrun.runner")

HEALTH_PREFIX = "graphrun:health:"
TRIM_EVERY = 5  # counting trims reads the stream's ends: every fifth report is often enough


@dataclass
class Counters:
    """Counts since the replica started; only the handling thread changes them."""

    received: int = 0
    handled: int = 0
    sent: int = 0
    failed: int = 0
    retried: int = 0
    dead_lettered: int = 0
    reclaimed: int = 0
    redis_errors: int = 0
    redis_restarts: int = 0


def health_key(graph: str, agent: str) -> str:
    return f"{HEALTH_PREFIX}{graph}:{agent}"


class Health:
    """Publishes the health record and notices Redis servers that restarted."""

    def __init__(self, *, graph: str, agent: str, consumer: str, clients: Mapping[str, redis.Redis],
                 home: str, inputs: Mapping[str, InputBinding], interval: float):
        self._key = health_key(graph, agent)
        self._agent = agent
        self._consumer = consumer
        self._clients = clients
        self._home = home
        self._inputs = inputs
        self.interval = interval
        self._reports = 0
        self._trimmed: dict[str, int] = {}
        self._run_ids: dict[str, str | None] = {}  # instance -> the server's run_id

    def restarted(self) -> list[str]:
        """Instances whose server restarted since the last look (a new run_id)."""
        out = []
        for instance, client in self._clients.items():
            run_id = client.info("server").get("run_id")
            if self._run_ids.setdefault(instance, run_id) != run_id:
                self._run_ids[instance] = run_id
                out.append(instance)
        return out

    def publish(self, counters: Counters, status: Mapping[str, Any], *, held: int, retrying: int,
                final: bool = False) -> None:
        if self._reports % TRIM_EVERY == 0 or final:
            self._trimmed = self._count_trimmed()
        self._reports += 1
        record: dict[str, Any] = {
            "agent": self._agent, "consumer": self._consumer, "pid": os.getpid(), "time": time.time(),
            "state": "stopped" if final else "running",
            **asdict(counters), "held": held, "retrying": retrying, "trimmed_before_read": self._trimmed,
        }
        record.update(status)
        pipe = self._clients[self._home].pipeline(transaction=False)
        pipe.hset(self._key, self._consumer, json.dumps(record, default=str))
        pipe.pexpire(self._key, int(self.interval * 5000))
        pipe.execute()

    def _count_trimmed(self) -> dict[str, int]:
        """Entries trimmed before this agent read them, per input; each increase is logged
        (this runs every TRIM_EVERY reports, which bounds the log's rate)."""
        group = self._agent
        counts = {b.port: transport.trimmed_before_read(self._clients[b.instance], b.key, group) or 0
                  for b in self._inputs.values()}
        for port, n in counts.items():
            before = self._trimmed.get(port, 0)
            if n > before:
                log.warning("%d entries of input %r were trimmed before %s read them (%d in all): the "
                            "agent is slower than the stream's bound", n - before, port, self._agent, n)
        return counts
