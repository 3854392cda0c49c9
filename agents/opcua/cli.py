"""`graphrun opcua-sim`: an OPC UA PLC simulator holding the nodes a graph's opcua agent maps.

    graphrun opcua-sim --graph graphs/finger_follower_iiot.yaml --agent plc_opcua
    graphrun opcua-sim --graph ... --agent ... --url opc.tcp://127.0.0.1:4841/plc/ --pulse 0.5

It prints each result it receives as one JSON line (the sequence and every mapped
node's value), echoes the sequence in the handshake node (``--no-take``: never), and
with ``--pulse`` plays the part-present signal on the agent's subscribed nodes.
"""

from __future__ import annotations

import argparse
import sys

from graphrun import GraphrunError

from ..sim_cli import agent_settings, serve
from .params import OpcuaParams
from .simulator import OpcuaPlcSim, SimResult


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "opcua-sim",
        help="run an OPC UA PLC simulator that prints each result it receives",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--graph", required=True, help="a graph file whose opcua agent maps the nodes")
    parser.add_argument("--agent", required=True, help="the opcua agent's name in --graph")
    parser.add_argument("--url", help="the endpoint to listen on (default: the agent's url)")
    parser.add_argument("--pulse", type=float, help="seconds between part-present signals on the subscribed nodes")
    parser.add_argument("--no-take", action="store_true", help="never echo the sequence in the handshake node")
    parser.set_defaults(func=run)


def _params(args: argparse.Namespace) -> OpcuaParams:
    settings = agent_settings("opcua-sim", args.graph, args.agent)
    if not isinstance(settings, OpcuaParams) or settings.mode != "client":
        raise GraphrunError(f"opcua-sim: agent {args.agent!r} in {args.graph} is not an opcua agent in client mode")
    return settings


def run(args: argparse.Namespace) -> int:
    try:
        params = _params(args)
    except GraphrunError as exc:
        print(exc, file=sys.stderr)
        return 2

    def show(result: SimResult) -> None:
        print(result.as_json(), flush=True)

    simulator = OpcuaPlcSim(params, url=args.url, take_results=not args.no_take, pulse=args.pulse, on_result=show)
    return serve(simulator, lambda: print(f"OPC UA PLC simulator on {simulator.url}", file=sys.stderr, flush=True))
