"""Prometheus metrics of one agent replica, served from its own process.

The runner already counts what it does (``health.Counters``); the endpoint reads those
counters when Prometheus scrapes, so counting a message costs nothing more. The two
histograms (handling time and end-to-end latency) are filled once per batch by the
handling thread (``AgentMetrics.batch``) into plain bucket arrays, not through
prometheus_client's per-call objects, so a message costs about a microsecond.
Consumer lag and pending per input are read from Redis with the health record (every
few seconds, on the handling thread) and only while the endpoint is served, so a
scrape never waits for Redis.

Owner: the handling thread writes; the scrape thread reads under ``_lock``.
"""

from __future__ import annotations

import threading
import time
from bisect import bisect_left
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict
from typing import Any

import redis
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.registry import Collector

from . import transport
from .errors import ConfigError
from .graph import InputBinding
from .health import Counters
from .message import Message

DEFAULT_HOST = "127.0.0.1"  # a plant network reaches it through a proxy or --metrics-host
# Seconds. Handling runs from well under a millisecond (a PLC write) to a good part of a
# second (a model on a small CPU); the line's latency from the part's trigger to its verdict
# is tens of milliseconds to a few seconds.
HANDLING_BUCKETS: tuple[float, ...] = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
LATENCY_BUCKETS: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

# Counters of health.Counters -> (metric name without _total, help).
COUNTER_METRICS: dict[str, tuple[str, str]] = {
    "received": ("graphrun_messages_received", "Entries read from the agent's input streams (messages in)."),
    "handled": ("graphrun_messages_handled", "Messages whose handling succeeded and was committed."),
    "sent": ("graphrun_messages_sent",
             "Messages written to the agent's output streams (messages out; dead letters not included)."),
    "failed": ("graphrun_handling_errors", "Handling attempts that raised (each is retried or dead-lettered)."),
    "retried": ("graphrun_messages_retried", "Handling attempts that asked for a retry (Retry)."),
    "dead_lettered": ("graphrun_messages_dead_lettered", "Messages moved to a dead-letter stream."),
    "expired": ("graphrun_requests_expired",
                "Requests from outside the graph skipped unhandled: their caller's deadline had passed."),
    "reclaimed": ("graphrun_messages_reclaimed", "Entries taken over from a consumer that stopped answering."),
    "redis_errors": ("graphrun_redis_errors", "Redis calls that failed (connection lost, timeout, full)."),
    "redis_restarts": ("graphrun_redis_restarts", "Redis servers seen restarting under the agent."),
}


class Buckets:
    """A cumulative histogram kept as counts per bucket: ``add`` takes many observations at once."""

    def __init__(self, bounds: Sequence[float]):
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)  # the last one: above every bound (+Inf)
        self.total = 0.0

    def add(self, value: float, n: int = 1) -> None:
        self.counts[bisect_left(self.bounds, value)] += n
        self.total += value * n

    def exposition(self) -> tuple[list[tuple[str, float]], float]:
        """Prometheus's cumulative (le, count) pairs, +Inf last, and the sum."""
        out, running = [], 0
        for bound, count in zip((*map(repr, map(float, self.bounds)), "+Inf"), self.counts):
            running += count
            out.append((bound, running))
        return out, self.total


class AgentMetrics:
    """What one replica exposes: its counters, two histograms, and lag and pending per input."""

    def __init__(self, *, graph: str, agent: str, consumer: str, counters: Counters,
                 inputs: Mapping[str, InputBinding]):
        self.labels = {"graph": graph, "agent": agent, "consumer": consumer}
        self.counters = counters
        self.inputs = inputs
        self.handling = Buckets(HANDLING_BUCKETS)
        self.latency = Buckets(LATENCY_BUCKETS)
        self.backlog: dict[str, tuple[int | None, int]] = {}  # input port -> (lag, pending)
        self.serving = False  # lag and pending are read from Redis only while an endpoint serves
        self._lock = threading.Lock()

    def batch(self, messages: Sequence[Message], seconds: float) -> None:
        """One handled batch: ``seconds`` spent on it in all, and each message's age now.

        Handling time is per message (the batch's time shared among them); latency is from
        the origin of each message's chain (its envelope's t0) to the end of its handling.
        """
        n = len(messages)
        if not n:
            return
        now = time.time()
        with self._lock:
            self.handling.add(seconds / n, n)
            latency = self.latency
            for message in messages:
                latency.add(now - message.created)

    def read_backlog(self, clients: Mapping[str, redis.Redis], group: str) -> None:
        """Each input's consumer lag (entries not yet read by the group) and pending entries
        (read, not yet acknowledged), from XINFO GROUPS. Lag is None where Redis cannot
        count it (entries deleted inside the unread range)."""
        if not self.serving:
            return
        backlog: dict[str, tuple[int | None, int]] = {}
        for binding in self.inputs.values():
            try:
                groups = clients[binding.instance].xinfo_groups(binding.key)
            except redis.ResponseError:  # the stream is gone (a Redis that restarted empty): no figure
                continue
            for info in groups:
                if transport.text(info["name"]) == group:
                    lag = info.get("lag")
                    backlog[binding.port] = (None if lag is None else int(lag), int(info["pending"]))
        with self._lock:
            self.backlog = backlog

    def snapshot(self) -> tuple[dict[str, int], Any, Any, dict[str, tuple[int | None, int]]]:
        with self._lock:
            return (asdict(self.counters), self.handling.exposition(), self.latency.exposition(),
                    dict(self.backlog))


class AgentCollector(Collector):
    """Turns an ``AgentMetrics`` into Prometheus metric families at scrape time."""

    def __init__(self, metrics: AgentMetrics):
        self._metrics = metrics
        self._sent = 0

    def _outputs_sent(self, counts: dict[str, int]) -> int:
        """Outputs written: the outbox counts dead letters among its writes (``sent``), and
        counts them only when it flushes, after ``dead_lettered`` went up; the difference
        can dip for a moment, and a counter must never go down."""
        self._sent = max(self._sent, counts["sent"] - counts["dead_lettered"])
        return self._sent

    def collect(self) -> Iterator[Any]:
        m = self._metrics
        names, values = list(m.labels), list(m.labels.values())
        counts, handling, latency, backlog = m.snapshot()
        counts["sent"] = self._outputs_sent(counts)
        for field, (name, help_text) in COUNTER_METRICS.items():
            family = CounterMetricFamily(name, help_text, labels=names)
            family.add_metric(values, counts.get(field, 0))
            yield family
        for name, help_text, (buckets, total) in (
            ("graphrun_handling_seconds", "Time the agent's code took per message.", handling),
            ("graphrun_latency_seconds",
             "Seconds from the origin of a message's chain (envelope t0) to the end of its handling by this agent.",
             latency),
        ):
            family = HistogramMetricFamily(name, help_text, labels=names)
            family.add_metric(values, buckets, total)
            yield family
        lag = GaugeMetricFamily("graphrun_input_lag", "Entries of an input stream the agent's group has "
                                "not read yet.", labels=[*names, "input"])
        pending = GaugeMetricFamily("graphrun_input_pending", "Entries of an input stream read by the "
                                    "agent's group and not acknowledged yet.", labels=[*names, "input"])
        for port, (n_lag, n_pending) in sorted(backlog.items()):
            if n_lag is not None:
                lag.add_metric([*values, port], n_lag)
            pending.add_metric([*values, port], n_pending)
        yield lag
        yield pending


def serve(metrics: AgentMetrics, port: int, host: str = DEFAULT_HOST) -> Any:
    """Serve ``metrics`` at http://HOST:PORT/metrics from a daemon thread; the server
    (``shutdown()`` stops it). Its own registry: only this replica's metrics, none of
    prometheus_client's process defaults that several replicas in one process would share."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(AgentCollector(metrics))
    try:
        server, _thread = start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        raise ConfigError(f"cannot serve metrics on {host}:{port}: {exc.strerror or exc} "
                          "(another process has the port? give each agent its own --metrics-port)") from None
    metrics.serving = True
    return server
