"""What the far-side simulator commands share (`graphrun plc-sim`, `graphrun opcua-sim`).

Each lays a simulator out like one agent of a graph, then serves until interrupted; the
lookup of that agent and the serving loop are the same for every protocol, so they live here.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, Protocol

from graphrun import GraphrunError, load_graph


class Simulator(Protocol):
    def start(self) -> Any: ...
    def wait(self) -> Any: ...
    def stop(self) -> Any: ...


def agent_settings(command: str, graph_file: str, agent: str) -> Any:
    """The validated params of ``agent`` in ``graph_file``; an error naming the command if it has none."""
    graph = load_graph(graph_file)
    if agent not in graph.agents:
        raise GraphrunError(f"{command}: graph {graph_file} has no agent {agent!r} "
                            f"(agents: {', '.join(sorted(graph.agents))})")
    return graph.agents[agent].settings


def serve(simulator: Simulator, announce: Callable[[], None]) -> int:
    """Start the simulator, ``announce`` it, and serve until Ctrl-C; the exit status (1: it did not start)."""
    try:
        simulator.start()
    except GraphrunError as exc:
        print(exc, file=sys.stderr)
        return 1
    announce()
    try:
        simulator.wait()
    except KeyboardInterrupt:
        pass
    finally:
        simulator.stop()
    return 0
