"""The finger-follower line as shipped, run by ``graphrun run`` at a given part rate.

Two cameras (synthetic 1280x1024 mono8), two classifiers, the PLC agent, the PLC
simulator, the archive and the HMI, as ``graphs/finger_follower.yaml`` wires them, on
three redis-servers this process starts (so their streams can be read after the run).
Only the trigger's rate, the ports and, for the runtime's own cost, the model change.

Per part, from the PLC agent's ``plc.results`` (written once the PLC holds the result):
latency = that time minus the moment the camera wrote the part's frame (its hop in the
message's trace), i.e. acquisition to PLC write. Every few seconds the classifiers'
backlog on the frame streams (lag + pending of their consumer groups) is sampled: a
rate is held when that backlog does not grow and every triggered part reached the PLC,
none "incomplete".
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import redis
import yaml

from graphrun import codec
from graphrun.redis_server import RedisServer

ROOT = Path(__file__).resolve().parent.parent
LINE = ROOT / "graphs" / "finger_follower.yaml"
INSTANCES = ("cam-front", "cam-back", "inference")
BACKLOG = (("cam-front", "cam.front.frames", "cls_front"), ("cam-back", "cam.back.frames", "cls_back"))


@dataclass
class LineRun:
    rate: float
    seconds: float
    parts: int  # triggered in the timed window
    at_plc: int  # results written for those parts
    incomplete: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    backlog: list[int] = field(default_factory=list)  # classifiers' lag + pending, sampled

    @property
    def held(self) -> bool:
        grew = len(self.backlog) >= 2 and self.backlog[-1] > max(4, 2 * self.backlog[0]) and self.backlog[-1] > 2 * self.rate
        return not grew and self.incomplete == 0 and self.at_plc >= self.parts - 2 * self.rate


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def line_graph(folder: Path, *, rate: float, model: str | None, hmi_port: int, plc_port: int) -> Path:
    graph = yaml.safe_load(LINE.read_text())
    agents = graph["agents"]
    agents["trigger"]["params"]["rate"] = rate
    agents["hmi"]["params"]["port"] = hmi_port
    agents["plc_sim"]["params"]["port"] = plc_port
    agents["plc"]["params"]["port"] = plc_port
    if "archive" in agents:
        agents["archive"].setdefault("params", {})["directory"] = str(folder / "archive")
    if model:
        for name in ("cls_front", "cls_back"):
            agents[name]["params"].update(backend="onnxruntime", model=model, model_updates=False)
    path = folder / "line.yaml"
    path.write_text(yaml.safe_dump(graph, sort_keys=False))
    return path


def _acquired(message: codec.Message) -> float | None:
    cameras = [h for h in message.hops if h.agent.startswith("cam")]
    return cameras[0].sent if cameras else None


def run_line(*, rate: float, seconds: float, warmup: float = 8.0, model: str | None = None) -> LineRun:
    """Run the line ``warmup + seconds``; figures over parts triggered in the last ``seconds``."""
    with tempfile.TemporaryDirectory(prefix="graphrun-line-") as tmp:
        folder = Path(tmp)
        servers = {name: RedisServer(name=name, persistence="none", data_dir=folder / name).start()
                   for name in INSTANCES}
        try:
            return _run(folder, servers, rate=rate, seconds=seconds, warmup=warmup, model=model)
        finally:
            for server in servers.values():
                server.stop()


def _run(folder: Path, servers: dict[str, RedisServer], *, rate: float, seconds: float, warmup: float,
         model: str | None) -> LineRun:
    graph = line_graph(folder, rate=rate, model=model, hmi_port=free_port(), plc_port=free_port())
    args = [sys.executable, "-m", "graphrun", "run", str(graph), "--duration", str(warmup + seconds + 6),
            "--state-dir", str(folder / "state"), "--log-level", "WARNING"]
    for name, server in servers.items():
        args += ["--redis", f"{name}={server.url}"]
    clients = {name: redis.Redis.from_url(server.url) for name, server in servers.items()}
    samples: list[int] = []
    stop = threading.Event()

    def sample() -> None:
        stop.wait(warmup)
        while not stop.is_set():
            samples.append(_backlog(clients))
            stop.wait(max(1.0, seconds / 12))

    log = (folder / "graphrun.log").open("wb")
    proc = subprocess.Popen(args, cwd=folder, stdout=log, stderr=subprocess.STDOUT, env={**os.environ})
    started = time.time()
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        proc.wait(timeout=warmup + seconds + 120)
    finally:
        stop.set()
        if proc.poll() is None:
            proc.kill()
        log.close()
    window = (started + warmup, started + warmup + seconds)
    return _figures(clients["inference"], rate, seconds, window, samples)


def _backlog(clients: dict[str, redis.Redis]) -> int:
    total = 0
    for instance, stream, group in BACKLOG:
        try:
            groups = {g["name"].decode(): g for g in clients[instance].xinfo_groups(stream)}
        except redis.ResponseError:
            continue
        g = groups.get(group)
        if g is not None:
            total += int(g.get("lag") or 0) + int(g.get("pending") or 0)
    return total


def _figures(inference: redis.Redis, rate: float, seconds: float, window: tuple[float, float],
             samples: list[int]) -> LineRun:
    parts = [codec.decode(f) for _, f in inference.xrange("line.parts")]
    timed = {m["part_id"] for m in parts if window[0] <= m.created < window[1]}
    latencies, incomplete, seen = [], 0, set()
    for _, fields in inference.xrange("plc.results"):
        message = codec.decode(fields)
        part = message["part_id"]
        if part not in timed or part in seen:
            continue
        seen.add(part)
        incomplete += message["outcome"] == "incomplete"
        acquired = _acquired(message)
        if acquired is not None:
            latencies.append((message["time"] - acquired) * 1000)
    lat = np.array(latencies) if latencies else np.array([np.nan])
    p50, p95, p99 = np.percentile(lat, [50, 95, 99])
    return LineRun(rate, seconds, len(timed), len(seen), incomplete, float(p50), float(p95), float(p99),
                   float(np.max(lat)), samples)
