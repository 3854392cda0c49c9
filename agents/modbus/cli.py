"""`graphrun plc-sim`: run the PLC simulator, laid out like a graph's Modbus agent expects.

    graphrun plc-sim --port 5020
    graphrun plc-sim --graph graphs/finger_follower.yaml --agent plc

With ``--graph`` and ``--agent`` the map, unit id and port come from that agent's
params (``--port`` and ``--unit`` still override them); without, the default map.
"""

from __future__ import annotations

import argparse
import sys

from graphrun import GraphrunError

from ..sim_cli import agent_settings, serve
from .regmap import RegisterMap
from .simulator import PlcResult, PlcSimulator


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "plc-sim",
        help="run a Modbus TCP PLC simulator that prints each result it receives",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--port", type=int, help="TCP port (default: the agent's port, else 502)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--unit", type=int, help="Modbus unit id (default: the agent's, else 1)")
    parser.add_argument("--graph", help="a graph file whose Modbus agent sets the register map")
    parser.add_argument("--agent", help="the Modbus agent's name in --graph")
    parser.add_argument(
        "--no-take", action="store_true", help="never echo the counter in result_read (to test the agent's timeout)"
    )
    parser.set_defaults(func=run)


def _settings(args: argparse.Namespace) -> tuple[RegisterMap, int, int]:
    """The map, port and unit id to simulate."""
    if (args.graph is None) != (args.agent is None):
        raise GraphrunError("plc-sim: give --graph and --agent together, or neither")
    if args.graph is None:
        return RegisterMap(), args.port or 502, 1 if args.unit is None else args.unit
    settings = agent_settings("plc-sim", args.graph, args.agent)
    regmap = getattr(settings, "map", None)
    if not isinstance(regmap, RegisterMap):
        raise GraphrunError(f"plc-sim: agent {args.agent!r} in {args.graph} is not a modbus agent")
    port = args.port or int(getattr(settings, "port", 502))
    unit = args.unit if args.unit is not None else int(getattr(settings, "unit", 1))
    return regmap, port, unit


def run(args: argparse.Namespace) -> int:
    try:
        regmap, port, unit = _settings(args)
    except GraphrunError as exc:
        print(exc, file=sys.stderr)
        return 2

    def show(result: PlcResult) -> None:
        print(result.describe(regmap), flush=True)

    simulator = PlcSimulator(regmap, host=args.host, port=port, unit=unit, take_results=not args.no_take,
                             on_result=show)
    layout = ", ".join(f"{name} = {entry.describe()} {entry.encoding}" for name, entry in regmap.entries())
    return serve(simulator, lambda: print(f"PLC simulator on {args.host}:{port}, unit {unit}: {layout}", flush=True))
