"""One hop between two processes through Redis, as a production line runs it.

    python bench/transport.py                          # the full table (~3-4 minutes on 2 cores)
    python bench/transport.py --seconds 1 --sizes "1 KB"   # a smoke test

A line's streams are capped and their readers keep up, so Redis holds a small backlog.
The bench measures that regime, not the cost of growing a backlog of gigabytes: the
producer never has more than 32 messages unconsumed (bench/hop.py, ``WINDOW``) and the
stream is capped at 50 entries, so what is measured is the highest rate the consumer
sustains without losing a message. For each payload (1 KB; 1.3 MB = one 1280x1024 mono8
frame; 5 MB), each client and each Redis persistence (none; aof = append-only file,
fsync every second), on a fresh redis-server each time:

- msg/s: messages consumed per second over ``--seconds``, after a warm-up;
- p50/p99 latency at a paced 30 msg/s (``--seconds`` worth of messages): receive time
  minus send time, on one clock.

Clients: plain redis-py (TCP, hiredis packer, XREADGROUP COUNT 1 and XACK per message);
tuned redis-py (the same calls with the pure-Python packer sending memoryviews, a unix
socket and 1 MiB reads, as graphrun's transport); graphrun: a source agent and a sink
agent run by graphrun's runner in two processes, on a Redis started with the graph's
``persistence``; graphrun shm: the same with the graph's ``frame_store`` set (payloads of
64 KiB and more through shared memory, the stream entry carrying the reference).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import redis

sys.path.insert(0, str(Path(__file__).resolve().parent))  # hop.py, also as agent type "hop:..."

from hop import (  # noqa: E402
    GROUP, STREAM, WINDOW, Board, graphrun_graph, raw_client, raw_consumer, raw_producer, remove_frame_store,
    run_agent, scratch,
)

from graphrun.redis_server import RedisServer  # noqa: E402

SIZES = {"1 KB": 1024, "1.3 MB": 1280 * 1024, "5 MB": 5 * 1024 * 1024}
CLIENTS = ("plain", "tuned", "graphrun", "graphrun shm")
PERSISTENCE = ("none", "aof")
RATE = 30.0
T = TypeVar("T")


@dataclass
class Figures:
    msg_per_s: float
    p50_ms: float
    p99_ms: float
    lost: int


def hop(client: str, persistence: str, size: int, rate: float, count: int,
        measure: Callable[[Board], tuple[T, int]], readers: int = 1) -> tuple[T, int]:
    """Run one producer and ``readers`` consumers (each its own group) on a fresh
    redis-server; ``measure`` reads the first reader's board, the lost are every reader's."""
    with scratch() as folder:
        board = Board.create(folder, capacity=count if rate else 0)
        others = [Board(Path(folder) / f"board{n}", capacity=count if rate else 0) for n in range(1, readers)]
        also = tuple(b.path for b in others)
        graph = (graphrun_graph(persistence, board, size, rate, count, frames=client == "graphrun shm", also=also)
                 if client.startswith("graphrun") else None)
        declared = graph.redis["main"].persistence if graph else persistence  # graphrun: as its graph says
        with RedisServer(name="bench", persistence=declared) as server:  # type: ignore[arg-type]
            if graph is not None:
                procs = [mp.Process(target=run_agent, args=(graph, name, server.unix_url, board.path))
                         for name in ("sink", *(f"sink{n}" for n in range(1, readers)), "source")]
            else:
                groups = [GROUP, *(f"{GROUP}{n}" for n in range(1, readers))]
                for group in groups:
                    raw_client(client, server).xgroup_create(STREAM, group, "$", mkstream=True)
                procs = [mp.Process(target=raw_consumer, args=(client, server, b.path, g))
                         for b, g in zip([board, *others], groups)]
                procs.append(mp.Process(target=raw_producer, args=(client, server, board.path, size, rate, count, also)))
            for p in procs:
                p.start()
            try:
                value, lost = measure(board)
                return value, lost + sum(b.lost for b in others)
            finally:
                for b in (board, *others):
                    b.stop()
                for p in procs:
                    p.join(30)
                    if p.is_alive():
                        p.kill()
                if graph is not None:
                    remove_frame_store(graph, server.unix_url)


def _wait(what: str, done: Callable[[], bool], timeout: float) -> None:
    end = time.monotonic() + timeout
    while not done():
        if time.monotonic() > end:
            raise RuntimeError(f"gave up waiting for {what} after {timeout:.0f} s")
        time.sleep(0.01)


def throughput(seconds: float) -> Callable[[Board], tuple[float, int]]:
    def measure(board: Board) -> tuple[float, int]:
        _wait("the first window", lambda: board.consumed >= WINDOW, 60)
        time.sleep(0.3)  # warm-up: connections, allocator, AOF file
        c0, t0 = board.consumed, time.perf_counter()
        time.sleep(seconds)
        return (board.consumed - c0) / (time.perf_counter() - t0), board.lost
    return measure


def latencies(count: int) -> Callable[[Board], tuple[list[float], int]]:
    def measure(board: Board) -> tuple[list[float], int]:
        _wait(f"{count} messages at {RATE:.0f}/s", lambda: board.consumed >= count, count / RATE + 60)
        return sorted(board.latency[:count].tolist()), board.lost
    return measure


def figures(client: str, persistence: str, size: int, seconds: float, readers: int = 1) -> Figures:
    rate, lost_fast = hop(client, persistence, size, 0.0, 1 << 62, throughput(seconds), readers)
    count = max(60, int(RATE * seconds))
    lat, lost_paced = hop(client, persistence, size, RATE, count, latencies(count), readers)
    return Figures(rate, 1000 * lat[len(lat) // 2], 1000 * lat[min(len(lat) - 1, int(len(lat) * 0.99))],
                   lost_fast + lost_paced)


def table(results: dict[tuple[str, str, str], Figures]) -> list[str]:
    lines = ["| payload | client | persistence | msg/s | p50@30 | p99@30 | % of tuned | p99 - tuned |",
             "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for (label, persistence, client), f in results.items():
        tuned = results[(label, persistence, "tuned")]
        lines.append(f"| {label} | {client} | {persistence} | {f.msg_per_s:,.0f} | {f.p50_ms:.2f} ms | "
                     f"{f.p99_ms:.2f} ms | {100 * f.msg_per_s / tuned.msg_per_s:.0f}% | "
                     f"{f.p99_ms - tuned.p99_ms:+.2f} ms |")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default=",".join(SIZES), help="comma-separated subset of: " + ", ".join(SIZES))
    parser.add_argument("--clients", default=",".join(CLIENTS), help="comma-separated subset of: " + ", ".join(CLIENTS)
                        + " (tuned is always run: the table compares with it)")
    parser.add_argument("--persistence", default=",".join(PERSISTENCE), help="comma-separated subset of: "
                        + ", ".join(PERSISTENCE))
    parser.add_argument("--readers", type=int, default=1,
                        help="consumers, each its own group (fan-out): every message reaches each")
    parser.add_argument("--repeat", type=int, default=1, help="repetitions; the median is reported")
    parser.add_argument("--seconds", type=float, default=4.0,
                        help="length of each throughput run and of each 30 msg/s latency run")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    mp.set_start_method("fork")
    results: dict[tuple[str, str, str], Figures] = {}
    clients = [c for c in CLIENTS if c == "tuned" or c in {s.strip() for s in args.clients.split(",")}]
    for label in [s.strip() for s in args.sizes.split(",")]:
        for persistence in [s.strip() for s in args.persistence.split(",")]:
            for client in clients:
                runs = [figures(client, persistence, SIZES[label], args.seconds, args.readers)
                        for _ in range(args.repeat)]
                f = results[(label, persistence, client)] = Figures(
                    *(statistics.median(getattr(r, k) for r in runs) for k in ("msg_per_s", "p50_ms", "p99_ms")),
                    lost=sum(r.lost for r in runs))
                print(f"{label:>7} {client:>8} {persistence:>4}: {f.msg_per_s:9,.0f} msg/s   "
                      f"p50 {f.p50_ms:6.2f} ms   p99 {f.p99_ms:6.2f} ms", flush=True)
    print("\n" + "\n".join(table(results)))
    lost = {k: f.lost for k, f in results.items() if f.lost}
    print(f"\nwindow {WINDOW} messages, {args.readers} reader(s); lost messages: {lost or 'none'}")
    with RedisServer(name="bench") as server:
        version = redis.Redis.from_url(server.url).info()["redis_version"]
    print(f"{os.cpu_count()} cores, Redis {version}, redis-py {redis.__version__}, numpy {np.__version__}")
    if args.json:
        args.json.write_text(json.dumps({" / ".join(k): asdict(f) for k, f in results.items()}, indent=2))
    return 1 if lost else 0


if __name__ == "__main__":
    raise SystemExit(main())
