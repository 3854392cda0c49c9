"""The ``graphrun`` command line.

    graphrun GRAPH                      run the whole graph here (same as `graphrun run`)
    graphrun validate GRAPH             check a graph file against the agent classes
    graphrun agent GRAPH AGENT          run one agent in the foreground (container entrypoint)
    graphrun status GRAPH [--watch]     agents' states and rates, streams' lag and pending (--check: health check)

Packages add subcommands through the ``graphrun.commands`` entry-point group.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING

from . import __version__, commands, logs, metrics, signals
from .errors import AgentStartError, ConfigError, GraphError, GraphrunError
from .graph import load_graph
from .launcher import EXIT_CONFIG, URLS_VARIABLE, Launcher
from .logs import FORMATS, LEVELS
from .metrics import DEFAULT_HOST as METRICS_HOST

if TYPE_CHECKING:
    from .runner import AgentRunner

COMMAND_GROUP = "graphrun.commands"
BUILTIN = {"run", "validate", "agent", "status"}


def _redis_option(text: str) -> tuple[str, str]:
    name, sep, url = text.partition("=")
    if not sep or not name or not url:
        raise argparse.ArgumentTypeError(f"expected NAME=URL, got {text!r}")
    return name, url


def add_redis_option(parser: argparse.ArgumentParser) -> None:
    """``--redis NAME=URL`` (repeatable), for subcommands that reach a graph's Redis.

    ``dict(args.redis)`` is the overrides mapping ``graphrun.redis_url`` takes.
    """
    parser.add_argument("--redis", type=_redis_option, action="append", default=[], metavar="NAME=URL",
                        help="use this URL for a Redis instance of the graph (repeatable)")


def _common(parser: argparse.ArgumentParser) -> None:
    add_redis_option(parser)
    parser.add_argument("--log-level", default="INFO", choices=LEVELS,
                        help="agents' log level (an agent's log_level in the graph wins)")
    parser.add_argument("--log-format", default="text", choices=FORMATS,
                        help="json: one JSON object per line (time, level, agent, logger, message)")
    parser.add_argument("--metrics-host", default=METRICS_HOST,
                        help=f"address the Prometheus endpoints listen on (default {METRICS_HOST})")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="graphrun", description="Run industrial edge-AI process graphs.")
    parser.add_argument("--version", action="version", version=f"graphrun {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser("run", help="run a graph on this machine")
    run.add_argument("graph", type=Path)
    run.add_argument("--duration", type=float, help="run this many seconds, then stop cleanly")
    run.add_argument("--node", help="run only the agents of this node")
    run.add_argument("--state-dir", type=Path, help="where local Redis data and the run record are kept (default: .graphrun/GRAPH-NAME beside the graph file)")
    run.add_argument("--metrics-port", type=int, metavar="BASE",
                     help="serve each agent replica's Prometheus metrics on its own port: BASE, BASE+1, ...")
    run.add_argument("--log-dir", type=Path, help="also write each agent replica's output to DIR/AGENT.log (rotated)")
    run.add_argument("--secure", action="store_true",
                     help="ACL users from the graph on the Redis servers started here: each agent gets its own")
    _common(run)
    run.set_defaults(func=cmd_run)

    validate = sub.add_parser("validate", help="check a graph file; list every problem")
    validate.add_argument("graph", type=Path)
    validate.set_defaults(func=cmd_validate)

    agent = sub.add_parser("agent", help="run one agent of a graph in the foreground")
    agent.add_argument("graph", type=Path)
    agent.add_argument("agent")
    agent.add_argument("--duration", type=float)
    agent.add_argument("--replica", type=int, help="replica number; names the consumer (default: the host name)")
    agent.add_argument("--consumer", help="consumer name in the agent's groups (overrides --replica)")
    agent.add_argument("--metrics-port", type=int, metavar="N", help="serve Prometheus metrics on this port")
    _common(agent)
    agent.set_defaults(func=cmd_agent)

    commands.register_all(sub)

    for ep in entry_points(group=COMMAND_GROUP):
        try:
            ep.load()(sub)
        except ImportError as exc:  # an optional part that is not installed
            logging.getLogger("graphrun").debug("command %s unavailable: %s", ep.name, exc)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    known = BUILTIN | set(parser._subparsers._group_actions[0].choices)  # type: ignore[union-attr]
    if argv and not argv[0].startswith("-") and argv[0] not in known:
        argv.insert(0, "run")  # `graphrun GRAPH` means `graphrun run GRAPH`
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except GraphError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        print(f"{len(exc.problems)} problem(s) found", file=sys.stderr)
        return 1
    except GraphrunError as exc:
        print(f"graphrun: {exc}", file=sys.stderr)
        return 1


def cmd_validate(args: argparse.Namespace) -> int:
    try:
        graph = load_graph(args.graph)
    except GraphrunError:
        raise
    except Exception as exc:  # noqa: BLE001 - see below
        # Any other exception is a bug of graphrun's own; validate still answers in the
        # FILE:LINE:COL form editors and CI read, rather than with a traceback.
        print(f"{args.graph}:1:1: graphrun could not finish validating this file: {type(exc).__name__}: {exc} "
              "(a bug in graphrun: please report it with this file)", file=sys.stderr)
        return 1
    streams = sum(len(a.outputs) for a in graph.agents.values())
    print(f"{args.graph}: ok: graph {graph.name!r}, {len(graph.agents)} agents, {streams} output streams, "
          f"Redis instances {', '.join(graph.redis)}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    graph = load_graph(args.graph)
    if args.node and args.node not in graph.nodes:
        raise ConfigError(f"graph {graph.name!r} has no node {args.node!r} (nodes: {', '.join(graph.nodes)})")
    launcher = Launcher(graph, node=args.node, redis_urls=dict(args.redis), state=args.state_dir,
                        log_level=args.log_level, log_format=args.log_format, log_dir=args.log_dir,
                        metrics_port=args.metrics_port, metrics_host=args.metrics_host, secure=args.secure)
    return launcher.run(args.duration)


def _launcher_urls() -> dict[str, str]:
    """The Redis URLs ``graphrun run`` gives an agent process in its environment."""
    raw = os.environ.get(URLS_VARIABLE)
    try:
        urls = json.loads(raw) if raw else {}
    except ValueError as exc:
        raise ConfigError(f"{URLS_VARIABLE} is not JSON: {exc}") from None
    if not isinstance(urls, dict):
        raise ConfigError(f"{URLS_VARIABLE} is not a JSON object of instance names and URLs")
    return {str(k): str(v) for k, v in urls.items()}


def cmd_agent(args: argparse.Namespace) -> int:
    from .runner import AgentRunner

    logs.configure(args.log_level, args.log_format, agent=args.agent)
    try:
        graph = load_graph(args.graph)
        own_level = graph.agents[args.agent].spec.log_level if args.agent in graph.agents else None
        if own_level is not None:
            logs.configure(own_level, args.log_format, agent=args.agent)
        runner = AgentRunner(graph, args.agent, replica=args.replica, consumer=args.consumer,
                             redis_urls={**_launcher_urls(), **dict(args.redis)})
    except GraphError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return EXIT_CONFIG
    except (ConfigError, AgentStartError) as exc:
        print(f"graphrun: {exc}", file=sys.stderr)
        return EXIT_CONFIG

    def stop(signum: int) -> None:
        logging.getLogger("graphrun").info("%s received: finishing the message in hand", signal.Signals(signum).name)
        runner.request_stop()

    with signals.calling_on(stop):
        return _run_agent(args, runner)


def _run_agent(args: argparse.Namespace, runner: AgentRunner) -> int:
    try:
        if args.metrics_port is not None:
            metrics.serve(runner.metrics, args.metrics_port, args.metrics_host)
    except ConfigError as exc:
        print(f"graphrun: agent {args.agent!r} cannot start: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        runner.run(args.duration)
    except AgentStartError as exc:
        print(f"graphrun: agent {args.agent!r} cannot start: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    return 0
