"""Riding out Redis outages: back off, reconnect, send what is waiting first.

``Outages.run(action)`` runs one step of the runner. On a lost connection (or NOGROUP:
a Redis that restarted empty) it backs off, and once a PING proves Redis answers again
it lets the runner recover (groups made again, the outbox flushed first, own pending
entries handled again) and runs the step again. What the outbox holds is kept
throughout, so nothing produced is dropped while the agent runs.

Stopping: once a stop is requested, the outbox gets ``STOP_FLUSH_GRACE`` seconds to
reach Redis; what is still unwritten then is reported once, and its input messages stay
pending in Redis, to be handled again.

Owner: the runner's handling thread.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import redis

from .backoff import Backoff
from .health import Counters
from .outbox import Outbox
from .transport import CONNECTION_ERRORS

log = logging.getLogger("graphrun.runner")

FULL_RETRY = 0.5  # seconds at most between tries while Redis is full
STOP_FLUSH_GRACE = 1.0  # seconds a stopping agent keeps trying to write what it made
T = TypeVar("T")


def _is_outage(exc: BaseException) -> bool:
    """A lost connection, a Redis that restarted empty (NOGROUP) or a full one (OOM)."""
    return (not isinstance(exc, redis.ResponseError) or "NOGROUP" in str(exc)
            or isinstance(exc, redis.exceptions.OutOfMemoryError))


class Outages:
    def __init__(self, *, stopping: threading.Event, counters: Counters, status: dict[str, Any],
                 outbox: Outbox, recover: Callable[[], None], relieve: Callable[[], int],
                 report: Callable[[], None] | None = None, report_every: float = 2.0):
        self._stopping = stopping
        self._counters = counters
        self._status = status
        self._outbox = outbox
        self._recover = recover  # the runner's: groups, then the outbox, then own pending
        self._relieve = relieve  # the runner's: trims what every reader has consumed; returns entries freed
        self._report = report  # the runner's: publishes the health record, so "degraded" is seen meanwhile
        self._report_every = report_every
        self._reported = 0.0
        self._full_logged = 0.0
        self._stop_seen = 0.0
        self._unwritten_reported = False

    def run(self, action: Callable[[], T], *, give_up_on_stop: bool = False) -> T | None:
        """``action()``, again after each outage until it succeeds (or the stop grace ends)."""
        backoff: Backoff | None = None  # made on the first failure: this runs for every read
        while True:
            try:
                return action()
            except (*CONNECTION_ERRORS, redis.ResponseError) as exc:
                if not _is_outage(exc):
                    raise
                self._counters.redis_errors += 1
                backoff = backoff or Backoff(initial=0.05, maximum=5.0)
                delay = backoff.next()
                full = isinstance(exc, redis.exceptions.OutOfMemoryError)
                if full:
                    delay = min(delay, FULL_RETRY)  # readers free room soon: look again often
                    self._full(exc, delay)
                else:
                    self._status["redis"] = f"unreachable: {exc}"
                self._say_degraded()
                if self._stopping.is_set():
                    self._stop_seen = self._stop_seen or time.monotonic()
                    left = STOP_FLUSH_GRACE - (time.monotonic() - self._stop_seen)
                    if give_up_on_stop or not self._outbox.unsent or left <= 0:
                        self._report_unwritten()
                        return None
                    time.sleep(min(delay, left))  # a set Event would not wait at all
                else:
                    if not full:  # a full Redis is logged by _full, at most every ten seconds
                        log.warning("Redis unreachable (%s); retrying in %.2f s", exc, delay)
                    self._stopping.wait(delay)
                try:
                    self._recover()
                except (*CONNECTION_ERRORS, redis.ResponseError) as again:
                    if not _is_outage(again):
                        raise
                    continue
                was = self._status.pop("redis", "")
                log.info("Redis has room again" if was.startswith("full") else "Redis reachable again")

    def _say_degraded(self) -> None:
        """Publish the health record now and then during an outage, where it can still be
        written (the home Redis may be another instance than the one that failed):
        otherwise the replica would only look stale, without why."""
        now = time.monotonic()
        if self._report is None or now - self._reported < self._report_every:
            return
        self._reported = now
        try:
            self._report()
        except (*CONNECTION_ERRORS, redis.ResponseError) as exc:
            log.debug("health record not published during the outage: %s", exc)

    def _full(self, exc: BaseException, delay: float) -> None:
        """A full Redis (maxmemory reached) is a state to report and recover from: trim what
        every reader has consumed of this agent's streams, say so, and back off."""
        self._status["redis"] = f"full: {exc}"
        try:
            freed = self._relieve()
        except (*CONNECTION_ERRORS, redis.ResponseError) as again:
            freed = 0
            log.debug("trimming consumed entries failed: %s", again)
        now = time.monotonic()
        if now - self._full_logged > 10.0:  # at most one line in ten seconds
            self._full_logged = now
            log.warning("Redis is full (%s): trimmed %d consumed entries of this agent's streams; "
                        "retrying in %.2f s", exc, freed, delay)

    def _report_unwritten(self) -> None:
        if self._outbox.writes and not self._unwritten_reported:
            self._unwritten_reported = True
            log.error("stopped while Redis is unreachable: %d output(s) not written; their input messages "
                      "stay pending and are handled again", len(self._outbox.writes))
