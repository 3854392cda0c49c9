"""Benchmark of the OPC UA agent (client mode), beside the Modbus agent's in the same session:
results written per second, and verdict-to-delivery latency.

    python bench/opcua.py                        # 1000 parts per phase, 100 parts/s when paced
    python bench/opcua.py --parts 2000 --rate 200 --no-modbus

The deployed path, as ``bench/modbus.py --mode graph``: verdicts are added to Redis
streams; the agent runs as ``graphrun agent`` in its own process; the OPC UA PLC
simulator (an asyncua server) runs in a child process. Latency is from the creation of
a part's last verdict to the simulator receiving the write of the part's sequence node
(the result's last write; both clocks are this machine's). Throughput is measured with a
burst of parts; latency with parts paced at ``--rate``. Each part has a front and a back
view. The result map is the shipped one (sequence, part id, outcome, label, score): two
write requests per result; ``--handshake`` adds the PLC's handshake (a read per result).
Then the Modbus agent's figures from ``bench/modbus.py`` (graph mode), with the same
parts and rate, so the two are measured on the same machine under the same load.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import redis
import yaml
from graphrun import Message, Pacer, codec
from graphrun.redis_server import RedisServer
from graphrun_agents.modbus.simulator import free_port
from graphrun_agents.opcua.params import OpcuaParams
from graphrun_agents.opcua.simulator import OpcuaPlcSim, SimResult

# bench/modbus.py, for its helpers and its graph-mode figures; imported by name from this
# folder, so that its simulator's child process (spawned) imports it the same way.
sys.path.insert(0, str(Path(__file__).resolve().parent))
import modbus
from far_side import FarSide, serve

VIEWS = modbus.VIEWS

NODES = {
    "sequence": {"node": "ns=2;s=Inspection.Result.Sequence", "type": "UInt32"},
    "part_id": {"node": "ns=2;s=Inspection.Result.PartId", "type": "UInt64"},
    "outcome": {"node": "ns=2;s=Inspection.Result.Outcome", "type": "Int16"},
    "label": {"node": "ns=2;s=Inspection.Result.Label", "type": "String"},
    "score": {"node": "ns=2;s=Inspection.Result.Score", "type": "Float"},
}
HANDSHAKE = {"node": "ns=2;s=Inspection.Result.Taken", "type": "UInt32"}


class Plc(FarSide):
    """The OPC UA PLC simulator in a child process; results come back as (part id, sequence, received)."""

    def __init__(self, params: dict[str, Any]) -> None:
        super().__init__(_serve, (params,), what="the OPC UA PLC simulator", limit=300.0)


def _serve(params: dict[str, Any], conn: Connection) -> None:
    received: list[tuple[int, int, float]] = []

    def record(result: SimResult) -> None:
        received.append((int(result.values["part_id"]), result.sequence, time.time()))

    sim = OpcuaPlcSim(OpcuaParams.model_validate(params), on_result=record)
    sim.start()
    serve(conn, received)
    sim.stop()
    conn.send(received)


def bench_opcua(parts: int, rate: float, handshake: bool) -> None:
    url = f"opc.tcp://127.0.0.1:{free_port()}/plc/"
    params: dict[str, Any] = {"url": url, "nodes": NODES, **({"handshake": HANDSHAKE} if handshake else {})}
    plc = Plc(params)
    graph_text = {
        "name": "bench-opcua",
        "agents": {"plc": {"type": "opcua", "params": params, "inputs": {
            v: {"from": f"main:verdicts.{v}", "batch": 64} for v in VIEWS}}},
    }
    with RedisServer(name="bench-opcua") as server, tempfile.TemporaryDirectory() as folder:
        graph = Path(folder) / "bench.yaml"
        graph_text["redis"] = {"main": {"url": server.url}}
        graph.write_text(yaml.safe_dump(graph_text))
        client = redis.Redis.from_url(server.url)
        agent = subprocess.Popen([sys.executable, "-m", "graphrun", "agent", str(graph), "plc",
                                  "--log-level", "WARNING"])
        created: dict[int, float] = {}

        def send(part_id: int) -> None:
            pipe = client.pipeline(transaction=False)
            for view in VIEWS:
                message = Message(modbus.verdict(part_id, view), producer=f"cls_{view}")
                created[part_id] = message.created  # the last view's: the part is complete from then
                pipe.xadd(f"verdicts.{view}", codec.encode(message))
            pipe.execute()

        try:
            send(0)  # warm-up: the agent has started and reached the server once this is written
            plc.wait(1)
            start = time.perf_counter()
            for p in range(1, parts + 1):
                send(p)
            plc.wait(parts + 1)
            seconds = time.perf_counter() - start
            pace = Pacer(rate)
            for p in range(parts + 1, 2 * parts + 1):
                pace.wait(modbus.sleep)
                send(p)
            plc.wait(2 * parts + 1)
        finally:
            agent.terminate()
            agent.wait(10)
            client.close()
            results = plc.stop()
    modbus.check_order(results, 0, 2 * parts)
    latencies = [(received - created[part_id]) * 1000 for part_id, _, received in results if part_id > parts]
    modbus.report("opcua", parts, seconds, latencies)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", type=int, default=1000, help="parts per phase (throughput, then latency)")
    parser.add_argument("--rate", type=float, default=100.0, help="parts per second in the latency phase")
    parser.add_argument("--handshake", action="store_true", help="the PLC echoes each sequence (a handshake node)")
    parser.add_argument("--no-modbus", action="store_true", help="skip the Modbus agent's figures")
    args = parser.parse_args()
    print(f"OPC UA agent, {'with' if args.handshake else 'without'} handshake ({args.parts} parts a phase, "
          f"latency at {args.rate:g} parts/s):")
    bench_opcua(args.parts, args.rate, args.handshake)
    if not args.no_modbus:
        print("Modbus agent, bench/modbus.py --mode graph, the same parts and rate:")
        modbus.bench_graph(args.parts, args.rate)


if __name__ == "__main__":
    main()
