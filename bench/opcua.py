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
import sys
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import yaml
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

    def graph_for(redis_url: str) -> str:
        return yaml.safe_dump({**graph_text, "redis": {"main": {"url": redis_url}}})

    modbus.run_graph(graph_for, plc, parts, rate, mode="opcua", name="bench-opcua")


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
