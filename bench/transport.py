"""One hop between two agent processes, against raw redis-py doing the same.

    python bench/transport.py            # full run (a few minutes)
    python bench/transport.py --quick    # smaller counts, for a smoke test

For each payload size (1 KB, 1.3 MB = one 1280x1024 mono8 frame, 5 MB) it measures
in one run, against one redis-server:
- throughput: N messages sent as fast as the producer can, received by a consumer
  process, from the first send to the last receive;
- latency p50/p99 at 30 messages/s: receive time minus send time (one clock);
for three clients:
- plain: redis-py as a plain script uses it (TCP, hiredis packer, XREADGROUP COUNT 1, XACK);
- tuned: the same calls with the pure-Python packer (no copy of large arguments),
  a unix socket and a 1 MiB read buffer;
- graphrun: a source agent and a sink agent run by graphrun's runner.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import redis
from pydantic import BaseModel

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from graphrun import Agent, Input, Message, Output  # noqa: E402
from graphrun.graph import parse_graph  # noqa: E402
from graphrun.redis_server import RedisServer  # noqa: E402
from graphrun.runner import AgentRunner  # noqa: E402
from redis.connection import PythonRespSerializer, UnixDomainSocketConnection  # noqa: E402

SIZES = {"1 KB": 1024, "1.3 MB": 1280 * 1024, "5 MB": 5 * 1024 * 1024}
COUNTS = {"1 KB": 20_000, "1.3 MB": 1_500, "5 MB": 400}
RATE = 30.0


# --- graphrun side: two agents ------------------------------------------------------------


class BenchSource(Agent):
    frames = Output()

    class Params(BaseModel):
        size: int
        count: int
        rate: float = 0.0  # 0: as fast as possible

    def start(self) -> None:
        self._payload = np.zeros(self.params.size, np.uint8)
        self._sent = 0
        self._next = time.monotonic()

    def produce(self) -> None:
        if self._sent >= self.params.count:
            self.wait(0.05)
            return
        if self.params.rate:
            delay = self._next - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            self._next += 1 / self.params.rate
        self.frames.send({"seq": self._sent, "data": self._payload})
        self._sent += 1


class BenchSink(Agent):
    frames = Input()

    class Params(BaseModel):
        count: int
        result: str

    def start(self) -> None:
        self._latency: list[float] = []
        self._first_sent = 0.0

    def handle(self, msg: Message) -> None:
        if not self._latency:
            self._first_sent = msg.created
        self._latency.append(msg.received - msg.created)  # type: ignore[operator]
        if len(self._latency) == self.params.count:
            Path(self.params.result).write_text(json.dumps(
                {"latency": self._latency, "elapsed": time.time() - self._first_sent}))


GRAPH = """\
name: bench
agents:
  source:
    type: __main__:BenchSource
    params: {{size: {size}, count: {count}, rate: {rate}}}
    outputs: {{frames: {{stream: bench.frames, maxlen: {maxlen}}}}}
  sink:
    type: __main__:BenchSink
    params: {{count: {count}, result: "{result}"}}
    inputs: {{frames: {{from: source.frames, batch: 16}}}}
"""


def _run_agent(graph_text: str, name: str, url: str, stop_after: float) -> None:
    runner = AgentRunner(parse_graph(graph_text), name, replica=0, redis_urls={"main": url})
    runner.run(duration=stop_after)


def graphrun_hop(url: str, size: int, count: int, rate: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp) / "result.json"
        text = GRAPH.format(size=size, count=count, rate=rate, maxlen=count + 10, result=result)
        limit = 600.0
        sink = mp.Process(target=_run_agent, args=(text, "sink", url, limit))
        sink.start()
        time.sleep(1.0)  # the sink's group exists before the first send
        source = mp.Process(target=_run_agent, args=(text, "source", url, limit))
        source.start()
        deadline = time.monotonic() + limit
        while not result.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.05)
        for p in (source, sink):
            p.terminate()
            p.join()
        return json.loads(result.read_text())


# --- raw redis-py side -----------------------------------------------------------------------


class _PythonPackedUnix(UnixDomainSocketConnection):
    def _construct_command_packer(self, packer: Any) -> Any:
        return PythonRespSerializer(self._buffer_cutoff, self.encoder.encode)


def _client(kind: str, server: RedisServer) -> redis.Redis:
    """plain: redis-py's defaults over TCP; tuned: the three changes of the reference
    measurement (pure-Python packer, unix socket, 1 MiB read buffer), nothing else."""
    if kind == "plain":
        return redis.Redis(host="127.0.0.1", port=server.port)
    pool = redis.ConnectionPool(connection_class=_PythonPackedUnix, path=server.unix_socket, socket_read_size=1 << 20)
    return redis.Redis(connection_pool=pool)


def _raw_consumer(kind: str, server: RedisServer, stream: str, count: int, out: mp.Queue) -> None:
    client = _client(kind, server)
    latency: list[float] = []
    first = 0.0
    while len(latency) < count:
        reply = client.xreadgroup("bench", "c1", {stream: ">"}, count=1, block=1000)
        if not reply:
            continue
        for entry_id, fields in reply[0][1]:
            now = time.time()
            sent = float(fields[b"t"])
            if not latency:
                first = sent
            latency.append(now - sent)
            client.xack(stream, "bench", entry_id)
    out.put({"latency": latency, "elapsed": time.time() - first})


def raw_hop(kind: str, server: RedisServer, size: int, count: int, rate: float) -> dict[str, Any]:
    stream = f"raw.{kind}.{size}.{rate}"
    client = _client(kind, server)
    client.delete(stream)
    client.xgroup_create(stream, "bench", "$", mkstream=True)
    queue: mp.Queue = mp.Queue()
    consumer = mp.Process(target=_raw_consumer, args=(kind, server, stream, count, queue))
    consumer.start()
    payload = bytes(size)
    next_at = time.monotonic()
    for _ in range(count):
        if rate:
            delay = next_at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            next_at += 1 / rate
        client.xadd(stream, {"t": repr(time.time()), "data": payload}, maxlen=count + 10, approximate=True)
    result = queue.get(timeout=600)
    consumer.join()
    client.delete(stream)
    return result


# --- report --------------------------------------------------------------------------------


def summarise(throughput: dict[str, Any], latency: dict[str, Any], count: int) -> dict[str, float]:
    lat = sorted(latency["latency"])
    return {
        "msg_per_s": count / throughput["elapsed"],
        "p50_ms": 1000 * lat[len(lat) // 2],
        "p99_ms": 1000 * lat[min(len(lat) - 1, int(len(lat) * 0.99))],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a tenth of the messages")
    parser.add_argument("--repeat", type=int, default=1, help="repetitions; the median is reported")
    parser.add_argument("--latency-messages", type=int, default=300, help="messages at 30/s per latency run")
    parser.add_argument("--sizes", default=",".join(SIZES), help="comma-separated subset of: " + ", ".join(SIZES))
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    mp.set_start_method("fork")
    scale = 0.1 if args.quick else 1.0
    lat_n = max(30, int(args.latency_messages * scale))
    results: dict[str, dict[str, dict[str, float]]] = {}
    with RedisServer(name="bench", appendonly=False) as server:
        version = redis.Redis.from_url(server.url).info()["redis_version"]
        for label in [s.strip() for s in args.sizes.split(",")]:
            size, count = SIZES[label], max(50, int(COUNTS[label] * scale))
            results[label] = {}
            for kind in ("plain", "tuned", "graphrun"):
                runs = []
                for _ in range(args.repeat):
                    if kind == "graphrun":
                        thr = graphrun_hop(server.unix_url, size, count, 0.0)
                        lat = graphrun_hop(server.unix_url, size, lat_n, RATE)
                    else:
                        thr = raw_hop(kind, server, size, count, 0.0)
                        lat = raw_hop(kind, server, size, lat_n, RATE)
                    runs.append(summarise(thr, lat, count))
                results[label][kind] = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
                r = results[label][kind]
                print(f"{label:>7} {kind:>8}: {r['msg_per_s']:9.0f} msg/s   p50 {r['p50_ms']:6.2f} ms   "
                      f"p99 {r['p99_ms']:6.2f} ms", flush=True)
    print()
    print("| payload | client | throughput (msg/s) | p50 at 30 msg/s | p99 at 30 msg/s | vs tuned throughput | p99 - tuned p99 |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for label, by_kind in results.items():
        tuned = by_kind["tuned"]
        for kind, r in by_kind.items():
            print(f"| {label} | {kind} | {r['msg_per_s']:,.0f} | {r['p50_ms']:.2f} ms | {r['p99_ms']:.2f} ms | "
                  f"{100 * r['msg_per_s'] / tuned['msg_per_s']:.0f}% | {r['p99_ms'] - tuned['p99_ms']:+.2f} ms |")
    print(f"\n{os.cpu_count()} cores, Redis {version}, redis-py {redis.__version__}, numpy {np.__version__}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
