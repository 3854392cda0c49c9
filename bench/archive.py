"""Benchmark of the archive agent's storage: what keeping one rejected part costs.

    python bench/archive.py                 # 20 parts of the synthetic line, 1280x1024 Mono8
    python bench/archive.py --parts 50 --width 2048 --height 2048

Renders parts as the synthetic camera does (textured metal, real defects), then
measures PNG encoding at several levels (time per image, size against the raw array)
and the whole store of one part as the agent does it: two images encoded, files
written and fsynced, folder renamed, index row committed. The figures are this
machine's, under whatever else it runs: compare levels within one run.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from graphrun_agents.archive import images
from graphrun_agents.archive.params import RetentionParams
from graphrun_agents.archive.store import Archive
from graphrun_agents.camera.synthetic import SyntheticConfig, render_part


def ms(seconds: list[float]) -> str:
    q = statistics.quantiles(seconds, n=20) if len(seconds) > 1 else seconds * 19
    return f"p50 {statistics.median(seconds) * 1000:6.1f} ms  p95 {q[18] * 1000:6.1f} ms  max {max(seconds) * 1000:6.1f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", type=int, default=20)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=1024)
    parser.add_argument("--levels", default="0,1,3,6,9", help="PNG compression levels to compare")
    parser.add_argument("--level", type=int, default=1, help="the level of the whole-part store (the agent's default: 1)")
    args = parser.parse_args()

    views = {v: [render_part(i, SyntheticConfig(width=args.width, height=args.height, view=v, seed=11))[0]
                 for i in range(args.parts)] for v in ("front", "back")}
    raw = views["front"][0].nbytes
    print(f"{args.parts} parts, 2 views of {args.width}x{args.height} {views['front'][0].dtype} ({raw / 1e6:.2f} MB raw)")
    for level in (int(x) for x in args.levels.split(",")):
        times, sizes = [], []
        for image in views["front"]:
            start = time.perf_counter()
            sizes.append(len(images.encode(image, level)[1]))
            times.append(time.perf_counter() - start)
        print(f"  PNG level {level}: {ms(times)}  {statistics.mean(sizes) / 1e6:.2f} MB ({statistics.mean(sizes) / raw:.0%} of raw)")

    with tempfile.TemporaryDirectory() as tmp:
        archive = Archive(Path(tmp), RetentionParams())
        times = []
        for i in range(args.parts):
            start = time.perf_counter()
            files = {f"{v}.png": images.encode(views[v][i], args.level)[1] for v in views}
            now = time.time()
            archive.put({"part_id": i, "origin": now, "time": now, "outcome": "defective", "label": "crack", "score": 0.9,
                         "stored": now, "plc": None}, files, model_versions="bench:1")
            times.append(time.perf_counter() - start)
        archive.close()
    print(f"  store one part at level {args.level} (encode 2 images, write, fsync, rename, commit): {ms(times)}")


if __name__ == "__main__":
    main()
