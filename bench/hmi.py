"""Benchmark of the HMI agent: what a preview costs the line, and what it costs a browser.

    python bench/hmi.py            # 1280x1024 and 2448x2048 (5 MP), Mono8 and BGR8
    python bench/hmi.py --quick

- handle(): the agent's own handling of one frame and one verdict (no Redis): what the
  HMI adds to each message it reads; it must not grow with the frame's size.
- preview: scaling one frame to the preview width and encoding it as JPEG, done once
  per frame a browser asks for, in the web server's threads.
- HTTP: a browser's poll of /api/state and fetch of /frame/<camera>.jpg, over a real
  socket to the agent's server (the JPEG already made).
"""

from __future__ import annotations

import argparse
import statistics
import time
import urllib.request
from collections.abc import Callable

from graphrun.message import Message
from graphrun.testing import AgentHarness
from graphrun_agents.camera.synthetic import SyntheticConfig, render_part
from graphrun_agents.hmi.agent import HmiAgent
from graphrun_agents.hmi.preview import PreviewCache
from graphrun_agents.hmi.state import Shot

SIZES = [(1280, 1024), (2448, 2048)]
FORMATS = ["Mono8", "BGR8"]


def per_call(action: Callable[[int], object], repeat: int) -> float:
    """Median seconds per call over five rounds of ``repeat`` calls."""
    rounds = []
    for _ in range(5):
        began = time.perf_counter()
        for i in range(repeat):
            action(i)
        rounds.append((time.perf_counter() - began) / repeat)
    return statistics.median(rounds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    quick = parser.parse_args().quick
    calls, encodes, fetches = (2000, 10, 50) if quick else (20000, 40, 200)

    groups = {"frames": ["front"], "verdicts": ["cls_front"]}
    with AgentHarness(HmiAgent, params={"port": 0}, groups=groups) as h:
        agent, port = h.agent, h.agent.server.port
        print(f"{'frame':<16} {'handle(frame)':>14} {'preview+JPEG':>13} {'JPEG':>7} {'GET .jpg':>9}")
        for width, height in SIZES:
            for fmt in FORMATS:
                image, _ = render_part(1, SyntheticConfig(width=width, height=height, pixel_format=fmt))
                payload = {"image": image, "camera": "cam_front", "part_id": 1, "frame": 1,
                           "timestamp": time.time(), "pixel_format": fmt, "width": width, "height": height}
                msg = Message(payload, port="front")
                handle = per_call(lambda i: agent.handle(msg), calls)
                cache = PreviewCache(640, 80)
                encode = per_call(lambda i: cache.jpeg(Shot("c", i, image, fmt, 1, 1, 0.0)), encodes)
                size = len(cache.jpeg(Shot("c", 0, image, fmt, 1, 1, 0.0)))
                url = f"http://127.0.0.1:{port}/frame/cam_front.jpg"
                urllib.request.urlopen(url).read()  # made once; the rest are served from the cache
                fetch = per_call(lambda i: urllib.request.urlopen(url).read(), fetches)
                print(f"{width}x{height} {fmt:<6} {handle * 1e6:>11.1f} us {encode * 1e3:>10.2f} ms "
                      f"{size / 1024:>4.0f} KiB {fetch * 1e3:>6.2f} ms")
        verdict = {"part_id": 1, "camera": "cam_front", "defective": False, "label": "ok", "score": 0.1,
                   "threshold": 0.5, "model": "m", "model_version": "1", "backend": "onnxruntime",
                   "preprocess_ms": 1.0, "inference_ms": 1.0}
        verdicts = [Message(dict(verdict, part_id=i), port="cls_front") for i in range(calls)]
        handle = per_call(lambda i: agent.handle(verdicts[i]), calls)
        state_url = f"http://127.0.0.1:{port}/api/state"
        poll = per_call(lambda i: urllib.request.urlopen(state_url).read(), fetches)
        print(f"handle(verdict) {handle * 1e6:.1f} us; GET /api/state (50 parts listed) {poll * 1e3:.2f} ms")


if __name__ == "__main__":
    main()
