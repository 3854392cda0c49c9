"""What observability costs the line: camera -> classifier -> PLC, plain, recorded and scraped.

    python bench/observability.py                  # 20 s per phase, 30 parts per second
    python bench/observability.py --seconds 15 --fps 10

The line is a private copy of graphs/finger_follower.yaml's front view (trigger at ``--fps``,
cam_front, cls_front, plc joining the front verdicts only, plc_sim on a free local port; no
HMI), run by ``graphrun run`` with its own ``--state-dir``. Three phases of ``--seconds``,
each after a warm-up: (1) plain; (2) while ``graphrun record`` records every output stream;
(3) the line restarted with ``--metrics-port BASE``, each agent's endpoint scraped with
urllib every second (the scraper stands for Prometheus and is not charged to the line).

Per phase: camera frames and PLC results per second; the line's CPU per frame (user + system
time over the phase of every process of the line: launcher, agents, redis-servers, from
psutil; divided by the PLC results written in it), the recorder's own CPU apart; latency
p50/p99 from the part's origin (the trigger's ``t0``) to its PLC result (the last hop's
``sent`` of the ``plc.results`` entry); and the differences to phase 1.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import redis
import yaml
from fault_line import free_port, stop_launcher
from graphrun import codec, load_graph
from graphrun.redis_server import dies_with_owner

ROOT = Path(__file__).resolve().parent.parent
AGENTS = ("trigger", "cam_front", "cls_front", "plc", "plc_sim")
FRAMES = ("cam-front", "cam.front.frames")  # (instance, stream) of the camera's frames
RESULTS = ("inference", "plc.results")  # of the PLC results


def one_view_line(source: Path, folder: Path, fps: float) -> Path:
    """The front view of ``source`` at ``fps`` parts per second, its PLC on a free port."""
    raw = yaml.safe_load(source.read_text())
    agents = {name: raw["agents"][name] for name in AGENTS}
    agents["trigger"]["params"]["rate"] = fps
    agents["plc"]["inputs"] = {"front": agents["plc"]["inputs"]["front"]}
    port = free_port()
    agents["plc"]["params"].update(host="127.0.0.1", port=port)
    agents["plc_sim"]["params"].update(host="127.0.0.1", port=port)
    nodes = {n: raw["nodes"][n] for n in {a["node"] for a in agents.values()}}
    instances = {n["redis"] for n in nodes.values()}
    redis_specs = {name: {k: v for k, v in spec.items() if k != "url"}
                   for name, spec in raw["redis"].items() if name in instances}
    copy = folder / "front_line.yaml"
    copy.write_text(yaml.safe_dump({**raw, "name": "finger_follower_front",
                                    "description": f"The front view at {fps:g} parts/s.", "redis": redis_specs,
                                    "nodes": nodes, "agents": agents}, sort_keys=False))
    load_graph(copy)  # a broken copy fails here, not in the launcher
    return copy


def free_ports(n: int) -> int:
    """A base port with ``n`` free ports from it on (``--metrics-port BASE`` takes BASE..BASE+n-1)."""
    while True:
        base = free_port()
        with contextlib.ExitStack() as socks:
            try:
                for port in range(base + 1, base + n):
                    socks.enter_context(socket.socket()).bind(("127.0.0.1", port))
                return base
            except OSError:
                continue


class LineRun:
    """One ``graphrun run`` of the line copy (own session, SIGTERM if the bench dies: as fault_line.Line)."""

    def __init__(self, graph_file: Path, folder: Path, metrics_port: int | None = None):
        folder.mkdir(parents=True)
        self.graph_file, state, self.log_path = graph_file, folder / "state", folder / "launcher.log"
        extra = ["--metrics-port", str(metrics_port)] if metrics_port else []
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "graphrun", "run", str(graph_file), "--state-dir", str(state),
                 "--log-level", "WARNING", *extra], stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True, preexec_fn=dies_with_owner(signal.SIGTERM))  # noqa: PLW1509
        self.seen: dict[int, psutil.Process] = {}  # every process met, to kill what the launcher leaves
        self.clients: dict[str, redis.Redis] = {}
        deadline = time.monotonic() + 60
        try:
            while not (state / "redis.json").exists() and time.monotonic() < deadline:
                self.check_alive()
                time.sleep(0.2)
            time.sleep(0.2)  # written whole by now
            self.urls: dict[str, str] = json.loads((state / "redis.json").read_text())
        except BaseException:
            self.stop()
            raise
        self.clients = {name: redis.Redis.from_url(url) for name, url in self.urls.items()}

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            raise RuntimeError(f"the launcher exited with code {self.process.returncode}; see {self.log_path}")

    def _tree(self) -> list[psutil.Process]:
        with contextlib.suppress(psutil.Error):
            launcher = psutil.Process(self.process.pid)
            tree = [launcher, *launcher.children(recursive=True)]
            self.seen.update((proc.pid, proc) for proc in tree if proc.pid not in self.seen)
            return tree
        return []

    def cpu(self) -> dict[int, tuple[str, float]]:
        """(name, CPU seconds) of every process of the line, by pid: launcher, agents, redis-servers."""
        names = {int(c.info("server")["process_id"]): f"redis {n}" for n, c in self.clients.items()}
        found = {}
        for i, proc in enumerate(self._tree()):
            with contextlib.suppress(psutil.Error):
                cmd, times = proc.cmdline(), proc.cpu_times()
                name = cmd[cmd.index("agent") + 2] if "agent" in cmd else names.get(proc.pid, proc.name())
                found[proc.pid] = ("launcher" if i == 0 else name, times.user + times.system)
        return found

    def stop(self) -> None:
        self._tree()
        stop_launcher(self.process, self.seen.values())


@dataclass
class Phase:
    name: str
    seconds: float
    frames: int  # camera frames written
    results: list[float]  # latency of each PLC result, seconds
    cpu: dict[str, float]  # CPU seconds by process name
    notes: list[str] = field(default_factory=list)
    recorder_cpu: float | None = None  # seconds, while recording
    recorded_frames: int = 0

    def cpu_per_result(self, cpu: float) -> float:
        return 1000 * cpu / max(len(self.results), 1)

    def percentile(self, q: float) -> float:
        lat = sorted(self.results)
        return 1000 * lat[min(len(lat) - 1, int(q * len(lat)))] if lat else float("nan")


def measure(name: str, line: LineRun, seconds: float) -> Phase:
    """Run for ``seconds``: frames written, PLC results (their latency), the line's CPU."""
    frames_client, results_client = line.clients[FRAMES[0]], line.clients[RESULTS[0]]
    start_cpu = line.cpu()
    frames0, start = int(frames_client.xinfo_stream(FRAMES[1])["entries-added"]), time.time()
    while time.time() < start + seconds:
        line.check_alive()
        time.sleep(0.2)
    end = time.time()
    frames1, end_cpu = int(frames_client.xinfo_stream(FRAMES[1])["entries-added"]), line.cpu()
    cpu: dict[str, float] = {}
    for pid, (proc, t) in end_cpu.items():  # a process started during the phase counts from zero
        cpu[proc] = cpu.get(proc, 0.0) + t - start_cpu.get(pid, ("", 0.0))[1]
    latencies = []
    for _, fields in results_client.xrange(RESULTS[1], min=int(start * 1000), max=int(end * 1000)):
        msg = codec.decode(fields)
        latencies.append(msg.hops[-1].sent - msg.created)
    return Phase(name, end - start, frames1 - frames0, latencies, cpu)


def recorded(line: LineRun, folder: Path, seconds: float) -> Phase:
    """Phase 2: measured while ``graphrun record`` records every output stream."""
    out = folder / "line.mcap"
    overrides = [a for name, url in line.urls.items() for a in ("--redis", f"{name}={url}")]
    recorder = subprocess.Popen([sys.executable, "-m", "graphrun", "record", str(line.graph_file), *overrides,
                                 "-o", str(out), "--duration", str(seconds + 1)],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    while not out.exists() and recorder.poll() is None:  # the file is made as the recording begins
        time.sleep(0.05)
    phase = measure("2 recorded", line, seconds)
    report, _ = recorder.communicate(timeout=120)
    if recorder.returncode != 0:
        raise RuntimeError(f"graphrun record failed:\n{report}")
    phase.recorder_cpu = float(re.search(r"recorder CPU ([\d.]+) s", report).group(1))  # type: ignore[union-attr]
    frames = re.search(rf"^{re.escape(':'.join(FRAMES))}: (\d+) entries.*$", report, re.MULTILINE)
    assert frames is not None, report
    phase.recorded_frames = int(frames.group(1))
    phase.notes += [f"recorder: {frames.group(0)}", "recorder: " + report.strip().splitlines()[-1]]
    return phase


def scraped(line: LineRun, base: int, count: int, seconds: float) -> Phase:
    """Phase 3: measured while every agent's endpoint is scraped once a second."""
    stop, sizes, failed = threading.Event(), list[int](), list[OSError]()

    def scrape() -> None:
        while not stop.wait(1.0 - time.time() % 1.0):
            for port in range(base, base + count):
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as reply:
                        sizes.append(len(reply.read()))
                except OSError as exc:
                    failed.append(exc)

    scraper = threading.Thread(target=scrape, daemon=True)
    scraper.start()
    try:
        phase = measure("3 scraped", line, seconds)
    finally:
        stop.set()
        scraper.join()
    phase.notes.append(f"{len(sizes)} scrapes of {count} endpoints answered ({sum(sizes) // max(len(sizes), 1)} "
                       f"bytes each), {len(failed)} failed{f': {failed[0]}' if failed else ''}")
    return phase


def warm_up(line: LineRun, seconds: float) -> None:
    """Until the first PLC result (the classifier has its model), then ``seconds`` more."""
    deadline = time.monotonic() + 120
    while not line.clients[RESULTS[0]].exists(RESULTS[1]) and time.monotonic() < deadline:
        line.check_alive()
        time.sleep(0.5)
    time.sleep(seconds)


def table(phases: list[Phase], fps: float) -> str:
    """The phases as markdown, each figure with its difference to the first phase; then CPU by process."""
    base = phases[0]

    def cell(p: Phase, figure: Callable[[Phase], float]) -> str:
        value = figure(p)
        return f"{value:.1f}" if p is base else f"{value:.1f} ({value - figure(base):+.1f})"

    rows = [("| phase | parts triggered/s | camera frames/s | PLC results/s | line CPU ms/frame | "
             "recorder CPU ms/frame | latency p50 ms | latency p99 ms |"), "|" + " --- |" * 8]
    for p in phases:
        rec = "" if p.recorder_cpu is None else f"{1000 * p.recorder_cpu / max(p.recorded_frames, 1):.1f}"
        rows.append(f"| {p.name} | {fps:g} | {p.frames / p.seconds:.1f} | {len(p.results) / p.seconds:.1f} | "
                    f"{cell(p, lambda q: q.cpu_per_result(sum(q.cpu.values())))} | {rec} | "
                    f"{cell(p, lambda q: q.percentile(0.5))} | {cell(p, lambda q: q.percentile(0.99))} |")
    names = sorted({n for p in phases for n in p.cpu})
    rows += ["", "| line CPU ms/frame, by process | " + " | ".join(p.name for p in phases) + " |",
             "|" + " --- |" * (len(phases) + 1)]
    rows += [f"| {n} | " + " | ".join(f"{p.cpu_per_result(p.cpu.get(n, 0.0)):.2f}" for p in phases) + " |"
             for n in names]
    return "\n".join(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--graph", type=Path, default=ROOT / "graphs" / "finger_follower.yaml")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each phase")
    parser.add_argument("--fps", type=float, default=30.0, help="parts (frames) per second the trigger asks for")
    parser.add_argument("--warmup", type=float, default=10.0, help="seconds after the first PLC result")
    args = parser.parse_args()

    phases: list[Phase] = []
    with tempfile.TemporaryDirectory(prefix="bench-observability-") as tmp:
        folder = Path(tmp)
        graph_file = one_view_line(args.graph, folder, args.fps)
        for metrics in (False, True):
            base = free_ports(len(AGENTS)) if metrics else None
            print(f"[observability] the line at {args.fps:g} parts/s" + (f", metrics on {base}.." if metrics else ""),
                  file=sys.stderr, flush=True)
            line = LineRun(graph_file, folder / ("metrics" if metrics else "plain"), base)
            try:
                warm_up(line, args.warmup)
                if metrics:
                    phases.append(scraped(line, base, len(AGENTS), args.seconds))  # type: ignore[arg-type]
                else:
                    phases.append(measure("1 plain", line, args.seconds))
                    phases.append(recorded(line, folder, args.seconds))
            finally:
                line.stop()
    print(table(phases, args.fps) + "\n")
    for p in phases:
        for note in p.notes:
            print(f"- {p.name}: {note}")
        rate = len(p.results) / p.seconds
        if rate < 0.95 * args.fps:
            print(f"- {p.name}: the line falls behind: {rate:.1f} PLC results/s for {args.fps:g} parts/s "
                  f"(camera {p.frames / p.seconds:.1f} frames/s); try a lower --fps")
    return 0


if __name__ == "__main__":
    sys.exit(main())
