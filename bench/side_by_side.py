"""Runs one pipeline of bench/pipeline.py and reads its figures off the board."""

from __future__ import annotations

import multiprocessing as mp
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import redis

sys.path.insert(0, str(Path(__file__).resolve().parent))

import pipeline  # noqa: E402
from hop import Board, remove_frame_store, run_agent, scratch  # noqa: E402

from graphrun.redis_server import RedisServer  # noqa: E402

WARMUP = 16  # verdicts before timing starts: sessions warm, reads settled
CAPACITY = 200_000


@dataclass
class Run:
    """One pipeline's figures: taken = verdicts that reached the sink in the timed window."""

    kind: str
    frames_per_s: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    taken: int
    lost: int


def _time(board: Board, seconds: float, alive: Callable[[], bool], kind: str) -> Run:
    deadline = time.monotonic() + 120
    while board.consumed < WARMUP:
        if time.monotonic() > deadline or not alive():
            raise RuntimeError(f"{kind}: no verdict reached the sink (took {board.consumed} in 120 s)")
        time.sleep(0.02)
    c0, t0 = board.consumed, time.perf_counter()
    time.sleep(seconds)
    c1, t1 = board.consumed, time.perf_counter()
    lat = np.array(board.latency[c0:c1]) * 1000
    pct = np.percentile(lat, [50, 95, 99]) if len(lat) else [float("nan")] * 3
    return Run(kind, (c1 - c0) / (t1 - t0), float(pct[0]), float(pct[1]), float(pct[2]),
               float(lat.max()) if len(lat) else float("nan"), c1 - c0, board.lost + board.given_up)


def _run_processes(board: Board, procs: list[mp.Process], seconds: float, kind: str) -> Run:
    """Start the pipeline's processes, time it, then stop them (those that do not stop, killed)."""
    for p in procs:
        p.start()
    try:
        return _time(board, seconds, lambda: all(p.is_alive() for p in procs), kind)
    finally:
        board.stop()
        for p in procs:
            p.join(30)
            if p.is_alive():
                p.kill()


def run_graphrun(*, rate: float, seconds: float, window: int, replicas: int = 1, batch: int = 1,
                 identity: bool = False, kind: str = "graphrun", frames: bool = False) -> Run:
    """The pipeline as graphrun agents; ``frames``: through a shared-memory frame store."""
    ctx = mp.get_context("fork")
    with scratch() as folder, RedisServer(name="bench", persistence="none") as server:
        board = Board.create(folder, CAPACITY)
        model = None
        if identity:
            model = str(Path(folder) / "identity.onnx")
            Path(model).write_bytes(pipeline.identity_model())
        graph = pipeline.graphrun_graph(board, rate=rate, window=window, replicas=replicas, batch=batch, model=model,
                                        frames=frames)
        names = [("sink", 0)] + [("classifier", r) for r in range(replicas)] + [("source", 0)]
        procs = [ctx.Process(target=run_agent, args=(graph, n, server.url, board.path, r)) for n, r in names]
        try:
            return _run_processes(board, procs, seconds, kind)
        finally:
            remove_frame_store(graph, server.url)


def run_redis_py(*, rate: float, seconds: float, window: int, identity: bool = False) -> Run:
    ctx = mp.get_context("fork")
    with scratch() as folder, RedisServer(name="bench", persistence="none") as server:
        board = Board.create(folder, CAPACITY)
        pipeline.raw_groups(redis.Redis.from_url(server.url))
        procs = [ctx.Process(target=pipeline.raw_sink, args=(server, board.path)),
                 ctx.Process(target=pipeline.raw_classifier, args=(server, board.path, identity)),
                 ctx.Process(target=pipeline.raw_source, args=(server, board.path, rate, window))]
        return _run_processes(board, procs, seconds, "redis-py")


def run_dora(*, rate: float, seconds: float, window: int, queue: int | None = None, identity: bool = False) -> Run:
    why = pipeline.dora_available()
    if why:
        raise RuntimeError(f"dora-rs: {why}")
    with scratch() as folder, tempfile.TemporaryDirectory(prefix="graphrun-dora-") as flow_dir:
        board = Board.create(folder, CAPACITY)
        flow = pipeline.dora_dataflow(Path(flow_dir), board, rate=rate, window=window, queue=queue, identity=identity)
        proc = pipeline.dora_run(flow, seconds + 150)
        try:
            return _time(board, seconds, lambda: proc.poll() is None, f"dora (window {window})")
        except RuntimeError as exc:
            err = proc.stderr.read().decode(errors="replace")[-2000:] if proc.poll() is not None and proc.stderr else ""
            raise RuntimeError(f"{exc}\n{err}") from exc
        finally:
            board.stop()
            proc.terminate()
            try:
                proc.wait(30)
            except Exception:  # noqa: BLE001 - a bench tidies up as it can
                proc.kill()
