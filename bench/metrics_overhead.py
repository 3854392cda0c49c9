"""What the metrics cost the handling thread per message: the histograms' per-batch hook.

    python3 bench/metrics_overhead.py

Counters cost nothing per message (the endpoint reads the runner's own counters when it is
scraped); what remains is ``AgentMetrics.batch`` plus the two ``perf_counter`` calls around
each batch in ``Delivery.process``.
"""

from __future__ import annotations

import time

from graphrun.health import Counters
from graphrun.message import Message
from graphrun.metrics import AgentMetrics

MESSAGES = 200_000


def per_message(batch: int) -> float:
    """Microseconds per message of the hook, for batches of ``batch`` messages."""
    metrics = AgentMetrics(graph="bench", agent="a", consumer="a-0", counters=Counters(), inputs={})
    messages = [Message({"n": i}, created=time.time() - 0.05) for i in range(batch)]
    rounds = MESSAGES // batch
    start = time.perf_counter()
    for _ in range(rounds):
        began = time.perf_counter()
        metrics.batch(messages, time.perf_counter() - began)
    return (time.perf_counter() - start) / (rounds * batch) * 1e6


def main() -> None:
    for batch in (1, 4, 16, 64):
        print(f"batches of {batch:3d}: {per_message(batch):5.2f} µs per message")


if __name__ == "__main__":
    main()
