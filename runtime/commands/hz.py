"""``graphrun hz GRAPH AGENT.PORT``: how fast messages flow on a port, and how late they are.

Every second it prints the rate over the last ``--window`` seconds and the end-to-end
latency of those messages: the time they were read minus their chain's origin time
(``t0`` of the envelope), so a verdict's latency counts from the trigger that asked for
its frame. The rate is the number of messages in the window over its length, so an
agent that writes in batches shows its throughput, not its burst rate. Origin times
come from the producers' clocks: across machines, their skew is part of the figure.
Plain XREAD: nothing the agents rely on is disturbed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import codec, follow
from ..cli import add_redis_option
from ..errors import ConfigError
from ..summary import format_age
from ..transport import Entry

REPORT_EVERY = 1.0  # seconds


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    hz = subparsers.add_parser("hz", help="message rate and end-to-end latency of a port, every second")
    hz.add_argument("graph", type=Path)
    hz.add_argument("port", metavar="AGENT.PORT", help="an output port, or an input port (its stream)")
    hz.add_argument("--window", type=float, default=10.0, metavar="S",
                    help="seconds of messages each report covers (default 10)")
    hz.add_argument("--count", type=follow.positive, metavar="N", help="stop after N reports")
    add_redis_option(hz)
    hz.set_defaults(func=cmd_hz)


@dataclass(frozen=True)
class Sample:
    read: float  # observer's clock, when read
    latency: float | None  # seconds since the chain's origin; None when the entry is no message


def sample(entry: Entry, now: float) -> Sample:
    """What ``hz`` keeps of an entry: it decodes the header alone, never the arrays."""
    latency = None
    try:
        header = json.loads((entry.fields or {}).get(codec.HEADER, b""))
        latency = now - float(header["t0"])
    except (ValueError, TypeError, KeyError):
        pass
    return Sample(now, latency)


class Window:
    """The samples of the last ``seconds``, and the figures a report shows."""

    def __init__(self, seconds: float, started: float):
        self.seconds = seconds
        self.started = started
        self.samples: deque[Sample] = deque()
        self.now = started

    def add(self, item: Sample) -> None:
        self.samples.append(item)

    def expire(self, now: float) -> None:
        self.now = now
        while self.samples and self.samples[0].read < now - self.seconds:
            self.samples.popleft()

    @property
    def span(self) -> float:
        """The seconds the window covers: its length, or the time watched while that is shorter."""
        return min(self.seconds, self.now - self.started)

    def rate(self) -> float:
        """Messages per second over the window: a mean over time, so a batch written at once
        counts for what it is, not for the microseconds between its entries."""
        return len(self.samples) / self.span if self.span > 0 else 0.0

    def report(self) -> str:
        latencies = [s.latency for s in self.samples if s.latency is not None]
        if not self.samples:
            return f"no new messages in the last {self.span:.0f} s"
        parts = [f"rate {self.rate():.2f}/s", f"{len(self.samples)} msgs in {self.span:.0f} s"]
        if latencies:
            p50, p99 = np.percentile(latencies, [50, 99])
            parts.append(f"latency p50 {format_age(float(p50))} p99 {format_age(float(p99))} "
                         f"max {format_age(max(latencies))}")
        else:
            parts.append("latency -")
        return ", ".join(parts)


def cmd_hz(args: argparse.Namespace) -> int:
    if args.window <= 0:
        raise ConfigError("--window must be positive")
    reports = 0
    with follow.watching(args.graph, args.port, dict(args.redis)) as (client, ref):
        print(f"# {args.port} on {ref}", file=sys.stderr, flush=True)
        start = follow.last_id(client, ref.key)
        window = Window(args.window, time.time())
        due = time.monotonic() + REPORT_EVERY
        for batch in follow.follow(client, ref.key, start):
            now = time.time()
            for entry in batch:
                window.add(sample(entry, now))
            if time.monotonic() < due:
                continue
            due = max(due + REPORT_EVERY, time.monotonic())
            window.expire(now)
            print(window.report(), flush=True)
            reports += 1
            if args.count is not None and reports >= args.count:
                return 0
    return 0
