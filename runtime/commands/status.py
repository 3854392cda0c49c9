"""``graphrun status GRAPH [--watch]``: a running graph's agents and streams in one table.

Per agent: its state (starting, running, degraded with why, stopping, stale when its
heartbeat is old), replicas seen of those declared, messages in and out per second,
failures, dead letters, restarts and the last error. Per stream: length, write rate,
each consumer group's lag and pending count (the backlog that says whether an agent
needs more replicas) and the length of its dead-letter stream.

``--agent NAME --check`` is the container health check: exit 0 when that agent (or
with ``--replica``, that replica) has a fresh heartbeat in state running, else 1 with
why. It reads only the agent's home Redis: in a container the others may be out of reach.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import redis
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from .. import transport
from ..cli import add_redis_option
from ..errors import ConfigError
from ..graph import Graph, load_graph, redis_url
from ..locate import CONNECT_TIMEOUT, running
from ..observe import AgentView, GraphView, Observer, StreamView, read_agent

REFRESH = 1.0  # seconds between two looks: --watch redraws, and a single table waits one for rates
STYLES = {"running": "green", "degraded": "yellow", "stale": "red", "starting": "cyan",
          "stopping": "magenta", "stopped": "dim", "no heartbeat": "red"}


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    status = subparsers.add_parser(
        "status", help="a running graph's agents (state, rates, errors) and streams (lag, pending, dead letters)")
    status.add_argument("graph", type=Path)
    status.add_argument("--watch", action="store_true", help="redraw every second until Ctrl-C")
    status.add_argument("--agent", metavar="NAME", help="only this agent")
    status.add_argument("--replica", type=int, metavar="N", help="with --check: only this replica (consumer NAME-N)")
    status.add_argument("--consumer", metavar="C", help="with --check: only the replica of this consumer name "
                                                        "(a Kubernetes pod's: NAME-<pod>)")
    status.add_argument("--check", action="store_true",
                        help="with --agent: exit 0 when it has a fresh heartbeat in state running, else 1 (health check)")
    add_redis_option(status)
    status.set_defaults(func=cmd_status)


def cmd_status(args: argparse.Namespace) -> int:
    graph: Graph = load_graph(args.graph)
    if args.agent is not None and args.agent not in graph.agents:
        raise ConfigError(f"graph {graph.name!r} has no agent {args.agent!r} (agents: {', '.join(graph.agents)})")
    if args.check:
        if args.agent is None:
            raise ConfigError("--check needs --agent NAME: it answers for one agent")
        healthy, why = check(graph, args.agent, dict(args.redis), replica=args.replica, consumer=args.consumer)
        print(why)
        return 0 if healthy else 1
    found = running(graph, dict(args.redis))
    console = Console(width=None if sys.stdout.isatty() else 200)
    try:
        observer = Observer(found)
        if not args.watch:
            observer.look()  # the baseline of the write rates
            time.sleep(REFRESH)
            console.print(render(observer.look(), only=args.agent))
            return 0
        with Live(console=console, auto_refresh=False) as live:
            while True:  # the first table has no write rates yet: they need two looks
                live.update(render(observer.look(), only=args.agent), refresh=True)
                time.sleep(REFRESH)
    except KeyboardInterrupt:  # how --watch ends
        return 0
    finally:
        found.close()


def check(graph: Graph, agent: str, overrides: dict[str, str], *, replica: int | None = None,
          consumer: str | None = None) -> tuple[bool, str]:
    """(healthy, why) of one agent: a fresh heartbeat in state running, of every replica seen
    (or of the one asked for, by replica number or consumer name)."""
    home = graph.home_redis(agent)
    try:
        client = transport.connect(redis_url(graph, home, overrides), socket_timeout=CONNECT_TIMEOUT,
                                   name="graphrun-check")
        try:
            view = read_agent(client, graph, agent, time.time())
        finally:
            client.connection_pool.disconnect()
    except (ConfigError, *transport.CONNECTION_ERRORS, redis.ResponseError) as exc:
        return False, f"{agent}: unhealthy: its Redis {home!r} cannot be read: {exc}"
    replicas = view.replicas
    if replica is not None or consumer is not None:
        consumer = consumer if consumer is not None else f"{agent}-{replica}"
        replicas = [r for r in replicas if r.consumer == consumer]
        if not replicas:
            return False, f"{consumer}: unhealthy: no heartbeat"
    if not replicas:
        return False, f"{agent}: unhealthy: no heartbeat"
    bad = [r for r in replicas if r.state != "running"]
    if bad:
        return False, "; ".join(f"{r.consumer}: unhealthy: {r.state}" + (f" ({r.reason})" if r.reason else "")
                                for r in bad)
    return True, "; ".join(f"{r.consumer}: running (heartbeat {r.age:.1f} s ago)" for r in replicas)


# --- the table ---------------------------------------------------------------------------------


def render(view: GraphView, *, only: str | None = None) -> Group:
    agents = [a for a in view.agents if only is None or a.name == only]
    streams = [s for s in view.streams if only is None or only in s.writers or any(g.group == only for g in s.groups)]
    parts: list[object] = [Text(f"graph {view.graph} at {time.strftime('%H:%M:%S', time.localtime(view.time))}",
                                style="bold")]
    parts += [Text(f"Redis {i}: {why}", style="red") for i, why in view.unreachable.items()]
    parts += [agent_table(agents), stream_table(streams)]
    return Group(*parts)  # type: ignore[arg-type]


def agent_table(agents: list[AgentView]) -> Table:
    table = Table(title="agents", title_justify="left", expand=False)
    for name, justify in [("agent", "left"), ("state", "left"), ("replicas", "right"), ("in/s", "right"),
                          ("out/s", "right"), ("failed", "right"), ("dead", "right"), ("trimmed", "right"),
                          ("restarts", "right"),
                          ("why / last error", "left")]:
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for a in agents:
        why = a.reason or ""
        if a.last_error:
            why = f"{why}; last error: {a.last_error}" if why else f"last error: {a.last_error}"
        table.add_row(a.name, Text(a.state, style=STYLES.get(a.state, "")), f"{a.seen}/{a.declared}",
                      _rate(a.in_per_s), _rate(a.out_per_s), str(a.failed), str(a.dead_lettered),
                      Text(str(a.trimmed), style="yellow" if a.trimmed else ""), str(a.restarts), why)
    return table


def stream_table(streams: list[StreamView]) -> Table:
    table = Table(title="streams", title_justify="left", expand=False)
    for name, justify in [("stream", "left"), ("length", "right"), ("writes/s", "right"), ("group", "left"),
                          ("lag", "right"), ("pending", "right"), ("dead", "right")]:
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for s in streams:
        if s.unreachable:
            table.add_row(str(s.ref), Text(s.unreachable, style="red"), "", "", "", "", "")
            continue
        head = [str(s.ref), "-" if s.length is None else str(s.length), _rate(s.write_per_s)]
        dead = Text(str(s.dead), style="red" if s.dead else "")
        if not s.groups:
            table.add_row(*head, "-", "", "", dead)
        for i, g in enumerate(s.groups):
            table.add_row(*(head if i == 0 else ["", "", ""]), g.group, "?" if g.lag is None else str(g.lag),
                          str(g.pending), dead if i == 0 else "")
    return table


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"
