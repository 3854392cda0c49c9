"""Benchmark of the MQTT agent: results published per second, and verdict-to-delivery latency.

    python bench/mqtt.py                          # plain JSON and Sparkplug B, default sizes
    python bench/mqtt.py --format sparkplug --parts 2000 --rate 200

The deployed path, as ``bench/modbus.py --mode graph`` measures the Modbus agent's:
results are added to a Redis stream; the agent runs as ``graphrun agent`` in its own
process and publishes them with QoS 1 to a local mosquitto; a subscriber in another
process (so that it does not compete with this one for the interpreter lock) notes when
each arrives. Latency is from the result's creation to its arrival at the subscriber
(both clocks are this machine's): the agent's read, its publish, the broker's PUBACK
path and the broker's delivery to a subscriber.

Throughput is measured with a burst of results, counted once the agent has acknowledged
them all in Redis (acknowledged after the broker's PUBACK); latency with results paced at
``--rate`` (a burst measures queueing, not the path).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path

import modbus
import numpy as np
import redis
from far_side import FarSide, serve
from graphrun import Message, Pacer, codec
from graphrun.redis_server import RedisServer
from graphrun_agents.mqtt.broker import Mosquitto

TOPIC = "bench/results"
SPARKPLUG = "spBv1.0/bench/NDATA/line"
FORMATS = {
    "json": f"publish: {{results: {TOPIC}}}",
    "sparkplug": "sparkplug: {group_id: bench, edge_node_id: line}\n      publish: {results: {}}",
}
GRAPH = """
name: bench-mqtt
redis: {{main: {{url: "{url}"}}}}
agents:
  mqtt:
    type: mqtt
    params:
      host: 127.0.0.1
      port: {port}
      max_inflight: 1000
      {publish}
    inputs:
      results: {{from: "main:plc.results", batch: 64}}
"""


def result(part_id: int) -> dict:
    return {"part_id": part_id, "outcome": "defective" if part_id % 10 == 0 else "ok", "label": "ok",
            "score": 0.25, "sequence": part_id, "time": time.time()}


class Receiver(FarSide):
    """A subscriber in a child process; arrivals come back as (part id, received)."""

    def __init__(self, port: int, fmt: str) -> None:
        super().__init__(_receive, (port, fmt), what="the subscriber")


def _receive(port: int, fmt: str, conn: Connection) -> None:
    import threading

    import paho.mqtt.client as mqtt
    from graphrun_agents.mqtt.sparkplug import value_of
    from graphrun_agents.mqtt.sparkplug_b_pb2 import Payload
    from paho.mqtt.enums import CallbackAPIVersion

    arrivals: list[tuple[int, float]] = []
    subscribed = threading.Event()

    def on_message(client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        now = time.time()
        if fmt == "json":
            arrivals.append((json.loads(message.payload)["data"]["part_id"], now))
        else:
            metrics = {m.name: m for m in Payload.FromString(message.payload).metrics}
            arrivals.append((value_of(metrics["results/part_id"]), now))

    client = mqtt.Client(CallbackAPIVersion.VERSION2)
    client.on_message = on_message
    client.on_subscribe = lambda *args: subscribed.set()
    client.connect("127.0.0.1", port)
    client.loop_start()
    client.subscribe(TOPIC if fmt == "json" else SPARKPLUG, qos=1)
    subscribed.wait(10)
    serve(conn, arrivals)
    client.disconnect()
    client.loop_stop()
    conn.send(list(arrivals))


def acknowledged(client: redis.Redis) -> int:
    """Results the agent has acknowledged in Redis (each after its PUBACK)."""
    try:
        info = {g["name"].decode(): g for g in client.xinfo_groups("plc.results")}["mqtt"]
    except (redis.ResponseError, KeyError):
        return 0
    return int(client.xlen("plc.results")) - int(info["pending"]) - int(info.get("lag") or 0)


def bench(fmt: str, parts: int, rate: float) -> None:
    with RedisServer(name="bench-mqtt") as server, Mosquitto() as broker, tempfile.TemporaryDirectory() as folder:
        graph = Path(folder) / "bench.yaml"
        graph.write_text(GRAPH.format(url=server.url, port=broker.port, publish=FORMATS[fmt]))
        receiver = Receiver(broker.port, fmt)
        client = redis.Redis.from_url(server.url)
        agent = subprocess.Popen([sys.executable, "-m", "graphrun", "agent", str(graph), "mqtt",
                                  "--log-level", "WARNING"])
        created: dict[int, float] = {}

        def send(part_ids: range) -> None:
            pipe = client.pipeline(transaction=False)
            for part_id in part_ids:
                message = Message(result(part_id), producer="plc")
                created[part_id] = message.created
                pipe.xadd("plc.results", codec.encode(message))
            pipe.execute()

        try:
            send(range(0, 1))  # warm-up: the agent has started and reached the broker once this arrives
            receiver.wait(1)
            start = time.perf_counter()
            send(range(1, parts + 1))
            end = time.monotonic() + 120
            while acknowledged(client) < parts + 1:
                if time.monotonic() > end:
                    raise SystemExit("the agent did not acknowledge every result")
                time.sleep(0.002)
            seconds = time.perf_counter() - start
            receiver.wait(parts + 1)
            pace = Pacer(rate)
            for p in range(parts + 1, 2 * parts + 1):
                pace.wait(modbus.sleep)
                send(range(p, p + 1))
            receiver.wait(2 * parts + 1)
        finally:
            agent.terminate()
            agent.wait(10)
            client.close()
            arrivals = receiver.stop()
    seen = {part_id for part_id, _ in arrivals}
    if seen != set(range(0, 2 * parts + 1)):
        raise SystemExit("results missing at the subscriber")
    first = {}
    for part_id, received in arrivals:
        first.setdefault(part_id, received)
    latencies = np.asarray([(first[p] - created[p]) * 1000 for p in range(parts + 1, 2 * parts + 1)])
    print(f"{fmt:9s} throughput: {parts / seconds:8.0f} results/s ({parts} results in {seconds:.2f} s, "
          "each acknowledged after its PUBACK)")
    print(f"{fmt:9s} latency:    p50 {np.percentile(latencies, 50):6.2f} ms   p99 {np.percentile(latencies, 99):6.2f} ms"
          f"   max {latencies.max():6.2f} ms ({len(latencies)} results at {rate:.0f}/s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--format", choices=("json", "sparkplug", "both"), default="both")
    parser.add_argument("--parts", type=int, default=2000, help="results per phase (throughput, then latency)")
    parser.add_argument("--rate", type=float, default=200.0, help="results per second in the latency phase")
    args = parser.parse_args()
    for fmt in ("json", "sparkplug") if args.format == "both" else (args.format,):
        bench(fmt, args.parts, args.rate)


if __name__ == "__main__":
    main()
