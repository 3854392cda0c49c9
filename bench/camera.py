"""Benchmark of the camera agent: frames per second into a Redis stream.

    python bench/camera.py            # viky.cti and synthetic, 300 frames per case
    python bench/camera.py --quick    # 60 frames per case

For each case, the rate the agent reaches (frames written to a real redis-server by the
runner) against two references: the configured rate, and the bare rate of the same
source without graphrun (harvesters fetching and handing back buffers; or rendering
synthetic parts in a loop). viky.cti's largest image is 800x800, so the GenICam cases
use that; synthetic parts are rendered at 1280x1024 Mono8.
"""

from __future__ import annotations

import argparse
import threading
import time
from dataclasses import dataclass
from typing import Any

import yaml
from harvesters.core import Harvester

from graphrun.graph import parse_graph
from graphrun.redis_server import RedisServer
from graphrun.runner import AgentRunner
from graphrun_agents.camera.genicam_source import apply_features, resolve_cti
from graphrun_agents.camera.synthetic import SyntheticConfig, render_part

VIKY = "pkg:genicam/viky.cti"
WARMUP = 10


@dataclass
class Case:
    name: str
    params: dict[str, Any]
    configured: float | None  # frames per second asked for; None: as fast as possible
    size: str


def viky_case(rate: float) -> Case:
    features = {"PixelFormat": "Mono8", "Width": 800, "Height": 800, "AcquisitionFrameRate": rate}
    return Case(f"viky.cti @ {rate:g}", {"source": "genicam", "cti": VIKY, "features": features, "fps": rate}, rate, "800x800 Mono8")


def synthetic_case(rate: float | None) -> Case:
    label = "max" if rate is None else f"{rate:g}"
    return Case(f"synthetic @ {label}", {"source": "synthetic", "fps": rate, "width": 1280, "height": 1024}, rate, "1280x1024 Mono8")


def bare_rate(case: Case, frames: int) -> float:
    """Frames per second of the source alone, without graphrun."""
    if case.params["source"] == "synthetic":
        config = SyntheticConfig(width=case.params["width"], height=case.params["height"])
        for i in range(WARMUP):
            render_part(i, config)
        start = time.perf_counter()
        for i in range(frames):
            render_part(WARMUP + i, config)
        return frames / (time.perf_counter() - start)
    harvester = Harvester()
    harvester.add_file(resolve_cti(VIKY)[0])
    harvester.update()
    acquirer = harvester.create(0)
    try:
        apply_features(acquirer.remote_device.node_map, case.params["features"])
        acquirer.start()
        for _ in range(WARMUP):
            with acquirer.fetch(timeout=5) as buffer:
                buffer.payload.components[0].data
        start = time.perf_counter()
        for _ in range(frames):
            with acquirer.fetch(timeout=5) as buffer:
                buffer.payload.components[0].data
        return frames / (time.perf_counter() - start)
    finally:
        acquirer.stop()
        acquirer.destroy()
        harvester.reset()


def graphrun_rate(case: Case, frames: int, redis_url: str) -> float:
    """Frames per second the camera agent writes to Redis (after a warm-up)."""
    spec = {"name": "bench", "agents": {"cam": {"type": "camera", "params": {**case.params, "count": WARMUP + frames},
                                                  "outputs": {"frames": {"stream": f"bench.{time.time_ns()}", "maxlen": 50}}}}}
    graph = parse_graph(yaml.safe_dump(spec), "bench.yaml")
    runner = AgentRunner(graph, "cam", redis_urls={"main": redis_url})
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    try:
        while runner.counters.sent < WARMUP:
            time.sleep(0.001)
        start, first = time.perf_counter(), runner.counters.sent
        while runner.counters.sent < WARMUP + frames:
            time.sleep(0.001)
        return (runner.counters.sent - first) / (time.perf_counter() - start)
    finally:
        runner.request_stop()
        thread.join(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="60 frames per case instead of 300")
    parser.add_argument("--frames", type=int, help="frames measured per case")
    args = parser.parse_args()
    frames = args.frames or (60 if args.quick else 300)
    cases = [viky_case(200), viky_case(30), synthetic_case(30), synthetic_case(None)]
    print(f"{frames} frames per case, after {WARMUP} of warm-up; agent -> runner -> redis-server (unix socket)")
    print(f"{'case':20s} {'image':16s} {'configured':>10s} {'bare':>8s} {'graphrun':>9s} {'of configured':>14s} {'of bare':>8s}")
    with RedisServer(name="bench") as server:
        for case in cases:
            bare = bare_rate(case, frames)
            reached = graphrun_rate(case, frames, server.unix_url)
            configured = "max" if case.configured is None else f"{case.configured:.0f}"
            of_configured = "-" if case.configured is None else f"{100 * reached / case.configured:.0f} %"
            print(f"{case.name:20s} {case.size:16s} {configured:>10s} {bare:8.1f} {reached:9.1f} {of_configured:>14s} "
                  f"{100 * reached / bare:7.0f} %", flush=True)


if __name__ == "__main__":
    main()
