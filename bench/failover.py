"""What a Redis failover loses, with and without ``wait_replicas``, and what WAIT costs.

    python bench/failover.py [--rate 1000] [--count 6000] [--trials 3] [--flushes 2000]

A counter and a doubler run through Redis Sentinel (a master, two replicas, three
sentinels on this machine, see graphrun.replicated). Mid-stream the master is killed
(SIGKILL); the sentinels promote a replica and the agents follow it. Counted on the new
master once the last number is doubled: numbers the counter had sent (its flush was
answered) that are missing, and results likewise. Then the price of WAIT: the time of one
outbox flush (one XADD) with wait_replicas 0 and 1, against the same replicated master.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from pathlib import Path

import redis
from graphrun import codec
from graphrun.graph import load_graph
from graphrun.health import Counters
from graphrun.message import Message
from graphrun.outbox import Outbox, Write
from graphrun.replicated import MASTER, Replicated
from graphrun.runner import AgentRunner
from graphrun.transport import connect


def _seqs(client: redis.Redis, stream: str) -> set[int]:
    return {codec.decode(fields).payload["seq"] for _, fields in client.xrange(stream)}


def trial(folder: Path, *, wait_replicas: int, rate: float, count: int) -> tuple[int, int, float]:
    """(numbers lost, results lost, seconds from the kill to the first result on the new master)."""
    with Replicated(folder) as servers:
        servers.settled_within(60)
        graph_file = folder / "ha.yaml"
        graph_file.write_text(f"""\
name: ha
redis:
  main: {{sentinel: {{master: {MASTER}, addresses: [{", ".join(servers.addresses)}]}}, wait_replicas: {wait_replicas}}}
agents:
  counter: {{type: examples.counter, params: {{rate: {rate}, count: {count}}}}}
  doubler: {{type: examples.doubler, inputs: {{numbers: counter.numbers}}}}
""")
        graph = load_graph(graph_file)
        runners = [AgentRunner(graph, name, replica=0) for name in graph.agents]
        threads = [threading.Thread(target=r.run, daemon=True) for r in runners]
        for thread in threads:
            thread.start()
        old = servers.master_port()
        before = redis.Redis(port=old)
        try:
            while before.xlen("ha.doubler.doubled") < count // 3:
                time.sleep(0.01)
            length = before.xlen("ha.doubler.doubled")
            servers.kill(old)
            killed = time.monotonic()
            while servers.master_port() == old:
                time.sleep(0.05)
            after = redis.Redis(port=servers.master_port())
            while after.xlen("ha.doubler.doubled") <= length - 50:  # results after the kill arrive
                time.sleep(0.01)
            resumed = time.monotonic() - killed
            deadline = time.monotonic() + 120
            while count - 1 not in _seqs(after, "ha.doubler.doubled") and time.monotonic() < deadline:
                time.sleep(0.2)
            numbers, doubled = _seqs(after, "ha.counter.numbers"), _seqs(after, "ha.doubler.doubled")
        finally:
            for runner in runners:
                runner.request_stop()
            for thread in threads:
                thread.join(30)
        everything = set(range(count))
        return len(everything - numbers), len(everything - doubled), resumed


def flush_cost(folder: Path, flushes: int) -> dict[int, list[float]]:
    """Microseconds per outbox flush of one XADD, by wait_replicas."""
    with Replicated(folder) as servers:
        servers.settled_within(60)
        client = connect(f"redis+sentinel://{','.join(servers.addresses)}/{MASTER}/0")
        fields = codec.encode(Message({"value": 1, "seq": 0}, producer="bench"))
        times: dict[int, list[float]] = {}
        for wait in (0, 1, 0, 1):  # interleaved, so drift hits both alike
            outbox = Outbox({"main": client}, "bench", Counters(), wait={"main": wait})
            for _ in range(flushes // 2):
                outbox.commit([Write("main", "bench.numbers", 10_000, fields)], {})
                start = time.perf_counter()
                outbox.flush()
                times.setdefault(wait, []).append((time.perf_counter() - start) * 1e6)
        return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=1000.0, help="numbers per second")
    parser.add_argument("--count", type=int, default=6000)
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--flushes", type=int, default=2000)
    args = parser.parse_args()
    print(f"failover at {args.rate:.0f} numbers/s, {args.count} numbers, master killed a third of the way")
    print("wait_replicas  trial  numbers lost  results lost  kill -> results again (s)")
    for wait in (0, 1):
        for t in range(args.trials):
            with tempfile.TemporaryDirectory(prefix="graphrun-failover-") as folder:
                lost_numbers, lost_results, resumed = trial(Path(folder), wait_replicas=wait, rate=args.rate,
                                                            count=args.count)
            print(f"{wait:>13}  {t + 1:>5}  {lost_numbers:>12}  {lost_results:>12}  {resumed:>25.1f}")
    with tempfile.TemporaryDirectory(prefix="graphrun-failover-") as folder:
        times = flush_cost(Path(folder), args.flushes)
    print(f"\none flush of one XADD to a master with two replicas on loopback ({args.flushes // 2} each):")
    for wait, samples in sorted(times.items()):
        samples.sort()
        print(f"  wait_replicas {wait}: median {statistics.median(samples):.0f} us, "
              f"p99 {samples[int(len(samples) * 0.99)]:.0f} us")


if __name__ == "__main__":
    main()
