"""Benchmark of ``graphrun record``: what recording the finger-follower line costs.

    python bench/record.py                 # 20 s alone, 20 s recorded, 20 s alone again
    python bench/record.py --seconds 10 --compression zstd

It runs the line (``graphrun run graphs/finger_follower.yaml`` with a private state
folder), then, for ``--seconds`` each: the line alone, the line while ``graphrun record``
records every output stream, and the line alone again. For each phase it prints the
frames written per second per camera and the cameras' latency (part trigger to frame
written, from the frames' envelopes): alone, of the frames the streams still hold (their
last 50, some 12 s); recorded, of every frame in the recording. For the recording it
prints the recorder's CPU time per entry and per frame (the recorder measures its own
process time while it records, imports excluded).
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis
from graphrun.recording import unpack_entry
from mcap.reader import make_reader

REPO = Path(__file__).resolve().parents[1]
GRAPH = REPO / "graphs" / "finger_follower.yaml"
FRAMES = {"cam-front": "cam.front.frames", "cam-back": "cam.back.frames"}


def figures(frames: list[tuple[str, int, dict]]) -> tuple[float, float, float]:
    """(frames per second per camera, median and p90 camera latency in ms) of (camera, id ms, header)."""
    latencies = sorted((h["hops"][-1][2] - h["t0"]) * 1000 for _, _, h in frames)
    rates = []
    for camera in {c for c, _, _ in frames}:
        ms = sorted(t for c, t, _ in frames if c == camera)
        if len(ms) > 1:
            rates.append((len(ms) - 1) / ((ms[-1] - ms[0]) / 1000))
    if not latencies:
        return 0.0, float("nan"), float("nan")
    return statistics.mean(rates), statistics.median(latencies), latencies[int(0.9 * len(latencies))]


def frames_in_redis(urls: dict[str, str]) -> list[tuple[str, int, dict]]:
    """The frames the streams still hold (their last 50: some 12 s of the line)."""
    found = []
    for instance, key in FRAMES.items():
        client = redis.Redis.from_url(urls[instance])
        for entry_id, fields in client.xrange(key):
            found.append((instance, int(entry_id.split(b"-")[0]), json.loads(fields[b"h"])))
        client.close()
    return found


def frames_in_recording(path: Path) -> list[tuple[str, int, dict]]:
    """Every frame of a recording, through the mcap library."""
    found = []
    with open(path, "rb") as file:
        for _, channel, message in make_reader(file).iter_messages(topics=[f"{i}:{k}" for i, k in FRAMES.items()]):
            entry_id, fields = unpack_entry(message.data)
            found.append((channel.topic, int(entry_id.split("-")[0]), json.loads(fields[b"h"])))
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--compression", default="none", choices=["none", "lz4", "zstd"])
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-record-") as tmp:
        state = Path(tmp) / "state"
        line = subprocess.Popen(
            [sys.executable, "-m", "graphrun", "run", str(GRAPH), "--state-dir", str(state),
             "--duration", str(3 * args.seconds + 90), "--log-level", "WARNING"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            record_file = state / "redis.json"
            end = time.monotonic() + 60
            while not record_file.exists() and time.monotonic() < end:
                time.sleep(0.2)
            urls = json.loads(record_file.read_text())
            overrides = [a for name, url in urls.items() for a in ("--redis", f"{name}={url}")]
            time.sleep(10)  # the classifiers load their model, the cameras their first parts

            time.sleep(args.seconds)
            phases = [("line alone", figures(frames_in_redis(urls)))]
            out = Path(tmp) / "line.mcap"
            done = subprocess.run(
                [sys.executable, "-m", "graphrun", "record", str(GRAPH), *overrides, "-o", str(out),
                 "--duration", str(args.seconds), "--compression", args.compression],
                capture_output=True, text=True, check=False)
            if done.returncode == 0:
                phases.append(("line while recorded", figures(frames_in_recording(out))))
            time.sleep(args.seconds)
            phases.append(("line alone again", figures(frames_in_redis(urls))))
        finally:
            line.terminate()
            line.wait(60)

    if done.returncode != 0:
        print(done.stdout, done.stderr, file=sys.stderr)
        return 1
    print(done.stdout, end="")
    frames = sum(int(m.group(1)) for m in re.finditer(r"frames: (\d+) entries", done.stdout))
    cpu = float(re.search(r"recorder CPU ([\d.]+) s", done.stdout).group(1))  # type: ignore[union-attr]
    print(f"\nrecorder CPU per frame (all of its CPU charged to the frames): {1000 * cpu / max(frames, 1):.2f} ms "
          f"for {frames} frames")
    print(f"{'phase':<22}{'frames/s per camera':>22}{'camera latency p50':>22}{'p90':>10}")
    for name, (rate, p50, p90) in phases:
        print(f"{name:<22}{rate:>22.2f}{p50:>19.1f} ms{p90:>7.1f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
