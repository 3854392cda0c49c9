"""``graphrun acl GRAPH``: the Redis ACL users of a graph, from the graph file alone.

One user per agent (``<graph>-<agent>``: its streams, its health, what its class
declares) and ``<graph>-observer`` (read only); see ``graphrun.acl`` for what each may
do. ``--format aclfile`` is an ACL file for ``redis-server --aclfile`` (the default user
off); ``--format commands`` is ``ACL SETUSER`` lines to pipe into ``redis-cli`` (the
default user is left alone there, since the session running them may be it). The
passwords' SHA-256 come from ``GRAPHRUN_REDIS_PASSWORD_<AGENT>`` (or ``..._FILE``);
a user whose secret is not set is written ``off``, and said so on standard error.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .. import acl
from ..errors import ConfigError
from ..graph import load_graph
from ..secrets import variable


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    cmd = subparsers.add_parser("acl", help="print the Redis ACL users of a graph: one per agent, and an observer")
    cmd.add_argument("graph", type=Path, help="the graph file (the graph need not be running)")
    cmd.add_argument("--node", help="only the users of this node's agents (and the observer)")
    cmd.add_argument("--format", choices=acl.FORMATS, default="aclfile",
                     help="aclfile: for redis-server --aclfile; commands: ACL SETUSER lines for redis-cli")
    cmd.add_argument("--instance", help="only this Redis instance's users (default: every instance, each under "
                                        "a '# Redis instance NAME' line)")
    cmd.add_argument("--out", type=Path, metavar="DIR", help="write DIR/<instance>.acl (or .redis) per instance "
                                                             "(mode 0644: hashes only, for a server of another user)")
    cmd.set_defaults(func=cmd_acl)


def quote(token: str) -> str:
    """A token as redis-cli reads it from a line: double-quoted when it has spaces or quotes."""
    if token and not any(c in token for c in ' "\'\\'):
        return token
    return '"' + token.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render(found: list[acl.User], instance: str, fmt: str, passwords: dict[str, str | None]) -> str:
    if fmt == "aclfile":
        return acl.aclfile(found, instance, passwords)
    return "".join(" ".join(quote(t) for t in command) + "\n" for command in acl.commands(found, instance, passwords))


def cmd_acl(args: argparse.Namespace) -> int:
    graph = load_graph(args.graph)
    found = acl.users(graph, args.node)
    instances = acl.instances_of(found)
    if args.instance is not None:
        if args.instance not in graph.redis:
            raise ConfigError(f"graph {graph.name!r} has no Redis instance {args.instance!r} "
                              f"(instances: {', '.join(graph.redis)})")
        instances = [args.instance]
    passwords = acl.passwords(found)
    for user in found:
        if passwords[user.name] is None:
            print(f"graphrun acl: no password for user {user.name}: written 'off' (it cannot log in); set "
                  f"{variable(acl.password_secret(user.role))} or {variable(acl.password_secret(user.role))}_FILE",
                  file=sys.stderr)
    suffix = ".acl" if args.format == "aclfile" else ".redis"
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        for instance in instances:
            path = args.out / f"{instance}{suffix}"
            path.write_text(render(found, instance, args.format, passwords), encoding="utf-8")
            path.chmod(0o644)  # password hashes only; readable by the Redis server's own user
            print(path)
        return 0
    for instance in instances:
        if len(instances) > 1:
            print(f"# Redis instance {instance}")
        sys.stdout.write(render(found, instance, args.format, passwords))
    return 0
