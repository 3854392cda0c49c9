"""Health: what a running agent replica tells the world about itself.

Each replica writes a JSON record into the hash ``graphrun:health:<graph>:<agent>``
(field: its consumer name) on its home Redis every few seconds, with a time to live,
so a stale replica disappears by itself. ``graphrun status`` reads these records.

The record's ``state`` is "starting" (before the agent's start() ran), "running",
"degraded" (with ``reason``: Redis unreachable or full, or the agent's own
``status["degraded"]``), "stopping" and "stopped". A reader calls a record whose
``time`` is older than ``STALE_INTERVALS`` of its ``interval`` (and at least
``STALE_MIN``) stale: the replica is gone or hung. ``starts`` counts the consumer's starts in a counter beside the hash
that has no time to live, so restarts are counted across processes.

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
STALE_INTERVALS = 5  # a heartbeat older than this many health intervals is stale
STALE_AFTER = 10.0  # seconds, for a record that does not say its interval
STALE_MIN = 2.0  # seconds: a busy machine delays a short-interval heartbeat this much without anything hung
TTL_INTERVALS = 30  # the hash outlives a stale heartbeat long enough to be shown as stale
TTL_MIN = 6 * STALE_MIN  # seconds, for the same reason when the interval is short
STARTS_PREFIX = "graphrun:starts:"


@dataclass
class Counters:
    """Counts since the replica started; only the handling thread changes them."""

    received: int = 0
    handled: int = 0
    sent: int = 0
    failed: int = 0
    retried: int = 0
    dead_lettered: int = 0
    expired: int = 0  # requests skipped: their caller's deadline had passed
    reclaimed: int = 0
    redis_errors: int = 0
    redis_restarts: int = 0
    frames_shared: int = 0  # arrays sent through the shared-memory frame store
    frames_inline: int = 0  # arrays the frame store had no room for: sent inline instead
    frames_unavailable: int = 0  # entries dead-lettered: their frame's slot was reused or is elsewhere


def stale(record: Mapping[str, Any], now: float) -> bool:
    """Whether a record's heartbeat is too old for the replica to count as there."""
    interval = record.get("interval")
    limit = max(STALE_INTERVALS * float(interval), STALE_MIN) if interval else STALE_AFTER
    return now - float(record.get("time", 0)) > limit


def health_key(graph: str, agent: str) -> str:
    return f"{HEALTH_PREFIX}{graph}:{agent}"


def starts_key(graph: str, agent: str) -> str:
    """The hash of start counts per consumer (no time to live: it counts restarts)."""
    return f"{STARTS_PREFIX}{graph}:{agent}"


def state_of(status: Mapping[str, Any], *, stopping: bool, final: bool) -> tuple[str, str | None]:
    """(state, reason) of a replica from the runner's status and its stop request."""
    if final:
        return "stopped", None
    if stopping:
        return "stopping", None
    reasons = [f"Redis {status['redis']}" if "redis" in status else None, status.get("degraded")]
    reason = "; ".join(str(r) for r in reasons if r)
    return ("degraded", reason) if reason else ("running", None)


class Health:
    """Publishes the health record and notices Redis servers that restarted."""

    def __init__(self, *, graph: str, agent: str, consumer: str, clients: Mapping[str, redis.Redis],
                 home: str, inputs: Mapping[str, InputBinding], interval: float):
        self._key = health_key(graph, agent)
        self._starts_key = starts_key(graph, agent)
        self._starts = 0
        self._last: tuple[float, int, int] | None = None  # (time, received, sent) of the last record
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

    def starting(self) -> None:
        """Count this start and say "starting", before the agent's start() runs: a replica
        whose start hangs or crashes shows as such, not as missing."""
        home = self._clients[self._home]
        self._starts = int(home.hincrby(self._starts_key, self._consumer, 1))
        self._write(self._head("starting", time.time()))

    def publish(self, counters: Counters, status: Mapping[str, Any], *, held: int, retrying: int,
                final: bool = False, stopping: bool = False, last_error: str | None = None) -> None:
        if self._reports % TRIM_EVERY == 0 or final:
            try:
                self._trimmed = self._count_trimmed()
            except (*transport.CONNECTION_ERRORS, redis.ResponseError) as exc:  # an input's Redis away
                log.debug("trimmed entries not counted (the last count stands): %s", exc)
        self._reports += 1
        now = time.time()
        state, reason = state_of(status, stopping=stopping, final=final)
        record: dict[str, Any] = {
            **self._head(state, now), **asdict(counters), "held": held, "retrying": retrying, "trimmed_before_read": self._trimmed,
            **self._rates(now, counters), "last_error": last_error,
        }
        # The agent's own status: a key the runtime writes ("state") is kept as "agent_state".
        record.update({f"agent_{k}" if k in record else k: v for k, v in status.items()})
        if reason:
            record["reason"] = reason
        self._write(record)

    def _head(self, state: str, now: float) -> dict[str, Any]:
        """What every record starts with: who, when, how often, in which state."""
        return {"agent": self._agent, "consumer": self._consumer, "pid": os.getpid(), "time": now,
                "interval": self.interval, "state": state, "starts": self._starts}

    def _rates(self, now: float, counters: Counters) -> dict[str, float | None]:
        """Messages received and sent per second since the previous record (None on the first)."""
        last, self._last = self._last, (now, counters.received, counters.sent)
        if last is None or now <= last[0]:
            return {"in_per_s": None, "out_per_s": None}
        span = now - last[0]
        return {"in_per_s": (counters.received - last[1]) / span, "out_per_s": (counters.sent - last[2]) / span}

    def _write(self, record: Mapping[str, Any]) -> None:
        pipe = self._clients[self._home].pipeline(transaction=False)
        pipe.hset(self._key, self._consumer, json.dumps(record, default=str))
        pipe.pexpire(self._key, int(max(self.interval * TTL_INTERVALS, TTL_MIN) * 1000))
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
