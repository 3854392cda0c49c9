"""Benchmark of the Modbus agent: results written per second, and verdict-to-PLC-write latency.

    python bench/modbus.py                  # both modes, default sizes
    python bench/modbus.py --mode graph --parts 2000 --rate 200

Two modes, both against a local pymodbus server (the PLC simulator) in a process of
its own, so it does not compete with the agent for the interpreter lock:

* ``agent``: the agent alone under the test harness, no Redis. Latency is the time
  from the part's last verdict entering ``handle`` to the PLC's reply to the write.
* ``graph``: the deployed path. Verdicts are added to Redis streams; the agent runs
  as ``graphrun agent`` in its own process. Latency is from the verdict's creation to
  the simulator receiving the sequence counter (both clocks are this machine's).

Throughput is measured with a burst of parts; latency with parts paced at ``--rate``
(a burst measures queueing, not the path). Each part has a front and a back view.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path

import numpy as np
import redis
from far_side import FarSide, serve
from graphrun import Message, Pacer, codec
from graphrun.redis_server import RedisServer
from graphrun.testing import AgentHarness
from graphrun_agents.modbus.agent import ModbusAgent
from graphrun_agents.modbus.regmap import RegisterMap
from graphrun_agents.modbus.simulator import PlcSimulator, free_port

VIEWS = ("front", "back")


def verdict(part_id: int, view: str) -> dict:
    return {"part_id": part_id, "camera": view, "defective": part_id % 10 == 0, "label": "ok", "score": 0.25,
            "threshold": 0.5, "model": "bench", "model_version": "1", "backend": "onnxruntime",
            "preprocess_ms": 1.0, "inference_ms": 1.0}


def sleep(seconds: float) -> bool:
    """``time.sleep`` as ``Pacer.wait`` takes it: nothing interrupts a benchmark's wait."""
    time.sleep(seconds)
    return False


def report(mode: str, parts: int, seconds: float, latencies_ms: list[float]) -> None:
    lat = np.asarray(latencies_ms)
    print(f"{mode:6s} throughput: {parts / seconds:8.0f} results/s ({parts} parts in {seconds:.2f} s)")
    print(f"{mode:6s} latency:    p50 {np.percentile(lat, 50):6.2f} ms   p99 {np.percentile(lat, 99):6.2f} ms"
          f"   max {lat.max():6.2f} ms ({len(lat)} parts)")


class Plc(FarSide):
    """The PLC simulator in a child process; results come back as (part id, sequence, received)."""

    def __init__(self) -> None:
        self.port = free_port()
        super().__init__(_serve, (self.port,), what="the PLC simulator")


def _serve(port: int, conn: Connection) -> None:
    with PlcSimulator(RegisterMap(), port=port) as plc:
        serve(conn, plc.results)
        conn.send([(int(r.values["part_id"]), r.sequence, r.received) for r in plc.results])


def bench_agent(parts: int, rate: float) -> None:
    plc = Plc()
    params = {"host": "127.0.0.1", "port": plc.port}
    with AgentHarness(ModbusAgent, name="plc", params=params, groups={"verdicts": list(VIEWS)}) as h:
        messages = [[h.message(v, verdict(p, v)) for v in VIEWS] for p in range(1, parts + 1)]
        start = time.perf_counter()
        for pair in messages:
            for message in pair:
                h.deliver([message])
        seconds = time.perf_counter() - start
        latencies: list[float] = []
        pace = Pacer(rate)
        for p in range(parts + 1, 2 * parts + 1):
            pace.wait(sleep)
            h.deliver([h.message("front", verdict(p, "front"))])
            last = h.message("back", verdict(p, "back"))
            t0 = time.perf_counter()
            h.deliver([last])  # returns once the PLC has answered the write
            latencies.append((time.perf_counter() - t0) * 1000)
    check_order(plc.stop(), 1, 2 * parts)
    report("agent", parts, seconds, latencies)


def check_order(results: list[tuple[int, int, float]], first: int, last: int) -> None:
    if [r[0] for r in results] != list(range(first, last + 1)):
        raise SystemExit("results missing, repeated or out of order")


GRAPH = """
name: bench-modbus
redis: {{main: {{url: "{url}"}}}}
agents:
  plc:
    type: modbus
    params: {{host: 127.0.0.1, port: {port}}}
    inputs:
      front: {{from: "main:verdicts.front", batch: 64}}
      back: {{from: "main:verdicts.back", batch: 64}}
"""


def bench_graph(parts: int, rate: float) -> None:
    plc = Plc()
    run_graph(lambda url: GRAPH.format(url=url, port=plc.port), plc, parts, rate, mode="graph", name="bench-modbus")


def run_graph(graph_text: Callable[[str], str], plc: FarSide, parts: int, rate: float, *, mode: str, name: str) -> None:
    """The deployed path: agent ``plc`` of the graph (its text made for the Redis URL) runs as
    ``graphrun agent``; a part's verdicts of every view go to Redis, a burst of ``parts`` then
    ``parts`` paced at ``rate``, until ``plc`` (the far side) has each result; figures as ``mode``."""
    with RedisServer(name=name) as server, tempfile.TemporaryDirectory() as folder:
        graph = Path(folder) / "bench.yaml"
        graph.write_text(graph_text(server.url))
        client = redis.Redis.from_url(server.url)
        agent = subprocess.Popen([sys.executable, "-m", "graphrun", "agent", str(graph), "plc",
                                  "--log-level", "WARNING"])
        created: dict[int, float] = {}

        def send(part_id: int) -> None:
            pipe = client.pipeline(transaction=False)
            for view in VIEWS:
                message = Message(verdict(part_id, view), producer=f"cls_{view}")
                created[part_id] = message.created  # the last view's: the part is complete from then
                pipe.xadd(f"verdicts.{view}", codec.encode(message))
            pipe.execute()

        try:
            send(0)  # warm-up: the agent has started and reached the PLC once this is written
            plc.wait(1)
            start = time.perf_counter()
            for p in range(1, parts + 1):
                send(p)
            plc.wait(parts + 1)
            seconds = time.perf_counter() - start
            pace = Pacer(rate)
            for p in range(parts + 1, 2 * parts + 1):
                pace.wait(sleep)
                send(p)
            plc.wait(2 * parts + 1)
        finally:
            agent.terminate()
            agent.wait(10)
            client.close()
            results = plc.stop()
    check_order(results, 0, 2 * parts)
    latencies = [(received - created[part_id]) * 1000 for part_id, _, received in results if part_id > parts]
    report(mode, parts, seconds, latencies)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=("agent", "graph", "both"), default="both")
    parser.add_argument("--parts", type=int, default=2000, help="parts per phase (throughput, then latency)")
    parser.add_argument("--rate", type=float, default=200.0, help="parts per second in the latency phase")
    args = parser.parse_args()
    if args.mode in ("agent", "both"):
        bench_agent(args.parts, args.rate)
    if args.mode in ("graph", "both"):
        bench_graph(args.parts, args.rate)


if __name__ == "__main__":
    main()
