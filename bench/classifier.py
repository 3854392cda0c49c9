"""Classifier throughput: the classification agent judging a backlog of frames.

    python bench/classifier.py                          # 160 frames, batch.max_size 1 and 8
    python bench/classifier.py --frames 80 --batches 1,4,8 --max-wait-ms 20

bench/inference.py times the model and its pre-processing alone; this measures what a
line gets from the agent as graphrun runs it, reads and acknowledgements included. A
camera agent (synthetic source, 1280x1024 Mono8, as the line's cameras) pre-fills a
stream with a backlog of frames. Then, one at a time, a classification agent per batch
size (the shipped model, ONNX Runtime, its own consumer group on that stream) is run by
graphrun's runner in a process of its own and judges the whole backlog. From its
``WARMUP``-th verdict to its last:

- frames/s;
- CPU time per frame of the agent's process, all threads (runner, ONNX Runtime), from
  ``time.process_time``;
- the batch sizes actually judged, read back from the verdicts: the frames of one
  inference call share that call's ``inference_ms``, so each run of consecutive equal
  values is one batch. A batch can only be as large as what the agent has in hand, so
  this shows whether the runner's reads hand it enough frames.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from itertools import groupby
from pathlib import Path

import redis

from graphrun import codec
from graphrun.graph import Graph, parse_graph
from graphrun.redis_server import RedisServer
from graphrun.runner import AgentRunner
from graphrun_agents.classification.model import DEFAULT_MODEL

WARMUP = 16  # verdicts before timing starts: session warm-up, first reads
FRAMES = "bench.frames"

GRAPH = """\
name: bench-classifier
redis: {{main: {{persistence: none}}}}
agents:
  camera:
    type: camera
    params: {{source: synthetic, view: front, seed: 5, fps: null, count: {total}}}
    outputs: {{frames: {{stream: {frames}, maxlen: {maxlen}}}}}
"""
CLASSIFIER = """\
  cls_b{size}:
    type: classification
    params: {{backend: onnxruntime, batch: {{max_size: {size}, max_wait_ms: {wait}}}}}
    inputs: {{frames: camera.frames}}
    outputs: {{verdicts: {{stream: bench.verdicts.b{size}, maxlen: {maxlen}}}}}
"""


def bench_graph(total: int, sizes: list[int], wait_ms: float) -> Graph:
    maxlen = total + 100  # the backlog is never trimmed
    return parse_graph(GRAPH.format(total=total, frames=FRAMES, maxlen=maxlen)
                       + "".join(CLASSIFIER.format(size=s, wait=wait_ms, maxlen=maxlen) for s in sizes))


def _wait_for(client: redis.Redis, stream: str, count: int, timeout: float) -> int:
    end = time.monotonic() + timeout
    while (n := client.xlen(stream)) < count:
        if time.monotonic() > end:
            raise RuntimeError(f"{stream}: {n} of {count} entries after {timeout:.0f} s")
        time.sleep(0.02)
    return n


@contextmanager
def agent_running(graph: Graph, agent: str, url: str) -> Iterator[None]:
    """One agent run by graphrun's runner in a thread of this process, stopped on exit."""
    runner = AgentRunner(graph, agent, replica=0, redis_urls={"main": url})
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    try:
        yield
    finally:
        runner.request_stop()
        thread.join(30)


def judge_backlog(graph: Graph, agent: str, url: str, total: int, out: mp.Queue) -> None:
    """In the agent's own process: run it, time the verdicts from WARMUP to ``total``."""
    client = redis.Redis.from_url(url)
    verdicts = graph.agents[agent].outputs["verdicts"].key
    with agent_running(graph, agent, url):
        n0 = _wait_for(client, verdicts, WARMUP, 300)
        t0, cpu0 = time.perf_counter(), time.process_time()
        n1 = _wait_for(client, verdicts, total, 600)
        t1, cpu1 = time.perf_counter(), time.process_time()
    out.put({"first": n0, "last": n1, "seconds": t1 - t0, "cpu_seconds": cpu1 - cpu0})


def batch_sizes(client: redis.Redis, stream: str, first: int, last: int) -> Counter[int]:
    """How many inference calls judged how many frames, among verdicts ``first``..``last``."""
    times = [codec.decode(fields).payload["inference_ms"] for _, fields in client.xrange(stream)][first:last]
    return Counter(len(list(run)) for _, run in groupby(times))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=160, help="frames timed, after the warm-up")
    parser.add_argument("--batches", default="1,8", help="comma-separated batch.max_size values")
    parser.add_argument("--max-wait-ms", type=float, default=0.0, help="batch.max_wait_ms (0: the agent's default)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    if not DEFAULT_MODEL.is_file():
        print(f"the shipped model {DEFAULT_MODEL} is missing", file=sys.stderr)
        return 1
    mp.set_start_method("fork")
    sizes = [int(s) for s in args.batches.split(",")]
    total = WARMUP + args.frames
    graph = bench_graph(total, sizes, args.max_wait_ms)
    rows = []
    with RedisServer(name="bench", persistence="none") as server:
        client = redis.Redis.from_url(server.url)
        started = time.perf_counter()
        with agent_running(graph, "camera", server.unix_url):
            _wait_for(client, FRAMES, total, 600)
        print(f"backlog: {total} frames of 1280x1024 Mono8, rendered in {time.perf_counter() - started:.1f} s",
              flush=True)
        for size in sizes:
            out: mp.Queue = mp.Queue()
            process = mp.Process(target=judge_backlog, args=(graph, f"cls_b{size}", server.unix_url, total, out))
            process.start()
            result = out.get(timeout=900)
            process.join(60)
            judged = result["last"] - result["first"]
            seen = batch_sizes(client, f"bench.verdicts.b{size}", result["first"], result["last"])
            row = {"max_size": size, "frames": judged, "frames_per_s": judged / result["seconds"],
                   "cpu_ms_per_frame": 1000 * result["cpu_seconds"] / judged,
                   "mean_batch": judged / sum(seen.values()), "batches_seen": dict(sorted(seen.items()))}
            rows.append(row)
            print(f"batch.max_size {size}: {row['frames_per_s']:.1f} frames/s, "
                  f"{row['cpu_ms_per_frame']:.1f} ms CPU/frame, batches seen (size: count) {row['batches_seen']}",
                  flush=True)
    print("\n| batch.max_size | frames/s | CPU ms/frame | mean batch seen | batches seen (size: count) |")
    print("| ---: | ---: | ---: | ---: | --- |")
    for r in rows:
        print(f"| {r['max_size']} | {r['frames_per_s']:.1f} | {r['cpu_ms_per_frame']:.1f} | {r['mean_batch']:.2f} | "
              f"{r['batches_seen']} |")
    print(f"\n{os.cpu_count()} cores, {args.frames} frames timed after {WARMUP} of warm-up, "
          f"batch.max_wait_ms {args.max_wait_ms:g}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
