"""The finger-follower line end to end, and side by side with dora-rs and hand-written redis-py.

    python bench/e2e.py                      # everything, about 15 minutes on 2 cores
    python bench/e2e.py --quick              # every part once, short: a smoke run
    python bench/e2e.py --only side-by-side  # or: line, hold, cost, scale-out (repeatable)

Parts (markdown tables on standard output, and in ``--out`` when given):

- ``line``: the shipped graph (bench/line_run.py) at 10, 30 and 60 parts/s, two cameras
  each: acquisition-to-PLC-write latency p50/p95/p99/max, parts triggered and at the PLC.
- ``hold``: the highest of those rates (and steps between) held for ``--hold`` seconds
  without the classifiers' backlog growing and with every part at the PLC.
- ``cost``: the runtime's own cost per part: the same line, and the same pipeline, with
  the model replaced by one that does nothing (bench/pipeline.py ``identity_model``).
- ``side-by-side``: source -> classifier -> sink with 1.3 MB frames and the same model
  (bench/pipeline.py), graphrun vs dora-rs vs hand-written redis-py: frames/s unpaced
  (at most 32 frames unanswered; dora also at most 2), latency at 30 frames/s, frames
  lost; ``--repeat`` times each, as the RedisAI benchmark reports (median of the runs,
  and each run's q50/q95/q99).
- ``scale-out``: the classifier as one replica and as two on one consumer group.
- ``shared-memory``: the side-by-side pipeline with the identity model (the transport
  is what differs): graphrun with frames through shared memory (``frame_store``) and
  through Redis, tuned redis-py, dora-rs at most 2 and 32 in flight: frames/s unpaced,
  latency at 30 frames/s, frames lost. (The side-by-side table also has graphrun with
  shared memory, as the kind "graphrun, shared memory".)
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import line_run  # noqa: E402
import pipeline  # noqa: E402
import side_by_side as sbs  # noqa: E402

PARTS = ("line", "hold", "cost", "side-by-side", "scale-out", "shared-memory")
WINDOW = 32


def platform_line() -> str:
    import onnxruntime
    import redis

    from graphrun.redis_server import RedisServer

    with RedisServer(name="probe", persistence="none") as server:
        version = redis.Redis.from_url(server.url).info("server")["redis_version"]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"{platform.machine()}, {os.cpu_count()} cores ({platform.processor() or platform.platform()}), "
            f"Python {platform.python_version()}, redis-server {version}, onnxruntime {onnxruntime.__version__}, "
            f"load average {load:.1f} at start")


def table(header: list[str], rows: list[list[object]]) -> str:
    def cell(v: object) -> str:
        return f"{v:,.1f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def line_rows(runs: list[line_run.LineRun]) -> list[list[object]]:
    return [[f"{r.rate:g}", r.parts, r.at_plc, r.incomplete, r.p50_ms, r.p95_ms, r.p99_ms, r.max_ms,
             f"{r.backlog[0] if r.backlog else '-'} -> {r.backlog[-1] if r.backlog else '-'}",
             "yes" if r.held else "no"] for r in runs]


LINE_HEADER = ["parts/s", "parts", "at PLC", "incomplete", "p50 ms", "p95 ms", "p99 ms", "max ms",
               "backlog first -> last", "held"]


def part_line(args: argparse.Namespace) -> str:
    runs = [line_run.run_line(rate=r, seconds=args.seconds * 2) for r in args.rates]
    return ("### Acquisition to PLC write, the shipped line (2 cameras, 1280x1024 mono8)\n\n"
            + table(LINE_HEADER, line_rows(runs)))


def part_hold(args: argparse.Namespace) -> str:
    rows, best = [], None
    for rate in args.hold_rates:
        run = line_run.run_line(rate=rate, seconds=args.hold)
        rows.append(run)
        if not run.held:
            break
        best = rate
    return (f"### Highest rate held for {args.hold:g} s without backlog growth: "
            f"{'none of those tried' if best is None else f'{best:g} parts/s'}\n\n" + table(LINE_HEADER, line_rows(rows)))


def part_cost(args: argparse.Namespace) -> str:
    with tempfile.TemporaryDirectory() as folder:
        identity = Path(folder) / "identity.onnx"
        identity.write_bytes(pipeline.identity_model())
        rate = 30.0
        model_line = line_run.run_line(rate=rate, seconds=args.seconds * 2)
        free_line = line_run.run_line(rate=rate, seconds=args.seconds * 2, model=str(identity))
    runs = [sbs.run_graphrun(rate=0, seconds=args.seconds, window=WINDOW, identity=True, kind="graphrun, identity"),
            sbs.run_redis_py(rate=0, seconds=args.seconds, window=WINDOW, identity=True)]
    runs[1].kind = "redis-py, identity"
    out = ["### The runtime's own cost per part (the model replaced by one that does nothing)", "",
           f"The line at {rate:g} parts/s, shipped model vs identity:", "",
           table(LINE_HEADER, line_rows([model_line, free_line])), "",
           "The pipeline unpaced, identity model (the cost of moving and judging nothing):", "",
           table(RUN_HEADER, [run_row(r) for r in runs]),
           "", f"Per frame: graphrun {1000 / runs[0].frames_per_s:.2f} ms, redis-py {1000 / runs[1].frames_per_s:.2f} ms "
           "(one process per stage; the slowest stage sets the rate)."]
    return "\n".join(out)


RUN_HEADER = ["pipeline", "frames/s", "p50 ms", "p95 ms", "p99 ms", "max ms", "frames taken", "frames lost"]


def run_row(r: sbs.Run) -> list[object]:
    return [r.kind, r.frames_per_s, r.p50_ms, r.p95_ms, r.p99_ms, r.max_ms, r.taken, r.lost]


def _kinds(args: argparse.Namespace, identity: bool = False) -> dict[str, Callable[[float], sbs.Run]]:
    kinds: dict[str, Callable[[float], sbs.Run]] = {
        "graphrun": lambda rate: sbs.run_graphrun(rate=rate, seconds=args.seconds, window=WINDOW, identity=identity),
        "graphrun, shared memory": lambda rate: sbs.run_graphrun(rate=rate, seconds=args.seconds, window=WINDOW,
                                                                 identity=identity, frames=True),
        "redis-py": lambda rate: sbs.run_redis_py(rate=rate, seconds=args.seconds, window=WINDOW, identity=identity),
    }
    why = pipeline.dora_available()
    if why is None:
        kinds["dora, 2 in flight"] = lambda rate: sbs.run_dora(rate=rate, seconds=args.seconds, window=2, queue=2,
                                                               identity=identity)
        kinds["dora, 32 in flight"] = lambda rate: sbs.run_dora(rate=rate, seconds=args.seconds, window=WINDOW,
                                                                identity=identity)
    else:
        print(f"dora-rs not measured: {why}", file=sys.stderr)
    return kinds


def part_side_by_side(args: argparse.Namespace, identity: bool = False) -> str:
    kinds = _kinds(args, identity)
    unpaced: dict[str, list[sbs.Run]] = {k: [] for k in kinds}
    paced: dict[str, list[sbs.Run]] = {k: [] for k in kinds}
    for _ in range(args.repeat):  # interleaved, so a slow minute of the machine hits every pipeline
        for kind, run in kinds.items():
            unpaced[kind].append(_named(run(0.0), kind))
            paced[kind].append(_named(run(30.0), kind))
    rows = []
    for kind in kinds:
        u, p = unpaced[kind], paced[kind]
        rows.append([kind, statistics.median(r.frames_per_s for r in u), statistics.median(r.p50_ms for r in p),
                     statistics.median(r.p95_ms for r in p), statistics.median(r.p99_ms for r in p),
                     sum(r.lost for r in u + p), sum(r.taken for r in u + p)])
    hand = statistics.median(r.frames_per_s for r in unpaced["redis-py"])
    ratios = []
    for mine in ("graphrun", "graphrun, shared memory"):
        ours = statistics.median(r.frames_per_s for r in unpaced[mine])
        ratios.append(f"{mine} / hand-written redis-py: {ours / hand:.0%} of the frames/s")
        for kind in kinds:
            if kind.startswith("dora"):
                d = statistics.median(r.frames_per_s for r in unpaced[kind])
                ratios.append(f"{mine} / {kind}: {ours / d:.2f}x the frames/s")
    runs = [run_row(r) + [f"{i + 1}", "unpaced"] for k in kinds for i, r in enumerate(unpaced[k])]
    runs += [run_row(r) + [f"{i + 1}", "30 frames/s"] for k in kinds for i, r in enumerate(paced[k])]
    model = "the identity model (the transport is what differs)" if identity else "the shipped model"
    return "\n".join([
        f"### Side by side: source -> classifier -> sink, 1.3 MB frames, {model}",
        "", f"Median of {args.repeat} runs of {args.seconds:g} s each; frames/s unpaced (at most {WINDOW} unanswered "
        "for graphrun and redis-py), latency at 30 frames/s (q50/q95/q99), frames lost over all runs.", "",
        table(["pipeline", "frames/s", "q50 ms @30", "q95 ms @30", "q99 ms @30", "frames lost", "frames taken"], rows),
        "", "; ".join(ratios) + ".", "", "Each run:", "", table(RUN_HEADER + ["run", "rate"], runs)])


def _named(run: sbs.Run, kind: str) -> sbs.Run:
    run.kind = kind
    return run


def part_scale_out(args: argparse.Namespace) -> str:
    runs = []
    for replicas in (1, 2):
        runs.append(sbs.run_graphrun(rate=0, seconds=args.seconds, window=WINDOW, replicas=replicas,
                                     kind=f"graphrun, {replicas} classifier replica{'s' if replicas > 1 else ''}"))
    return ("### Scale-out: one classification replica against two on one consumer group (unpaced)\n\n"
            + table(RUN_HEADER, [run_row(r) for r in runs])
            + f"\n\nTwo replicas: {runs[1].frames_per_s / runs[0].frames_per_s:.2f}x the frames/s of one.")


def part_shared_memory(args: argparse.Namespace) -> str:
    return part_side_by_side(args, identity=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", action="append", choices=PARTS, help="run only this part (repeatable)")
    parser.add_argument("--quick", action="store_true", help="short runs, one repetition: a smoke run")
    parser.add_argument("--seconds", type=float, default=10.0, help="timed seconds of each pipeline run")
    parser.add_argument("--repeat", type=int, default=3, help="repetitions of each side-by-side run")
    parser.add_argument("--hold", type=float, default=60.0, help="seconds a rate must be held")
    parser.add_argument("--rates", default="10,30,60", help="line rates, parts/s (each part: 2 frames)")
    parser.add_argument("--hold-rates", default="5,10,15,20,30", help="rates tried for the hold, in order")
    parser.add_argument("--out", type=Path, help="also write the tables to this markdown file")
    args = parser.parse_args()
    args.rates = [float(r) for r in args.rates.split(",")]
    args.hold_rates = [float(r) for r in args.hold_rates.split(",")]
    if args.quick:
        args.seconds, args.repeat, args.hold = 3.0, 1, 10.0
    parts = args.only or list(PARTS)
    sections = [f"Platform: {platform_line()}. Command: `python bench/e2e.py {' '.join(sys.argv[1:])}`".rstrip()]
    began = time.monotonic()
    for name, part in (("line", part_line), ("hold", part_hold), ("cost", part_cost),
                       ("side-by-side", part_side_by_side), ("scale-out", part_scale_out),
                       ("shared-memory", part_shared_memory)):
        if name in parts:
            sections.append(part(args))
            print(sections[-1] + "\n", flush=True)
    sections.append(f"(whole run: {time.monotonic() - began:.0f} s)")
    if args.out:
        args.out.write_text("\n\n".join(sections) + "\n")


if __name__ == "__main__":
    main()
