"""What an agent may touch in Redis beyond its own ports, as its class declares it.

The runtime knows what every agent needs for its ports (read its inputs, write its
outputs and dead letters, publish its health) and grants that itself (see ``acl``).
Anything else an agent opens with ``self.redis(instance)`` (a counter it keeps, model
versions, a Redis module's commands, the graph's health) is said by the agent's class,
so that the ACL user generated for it allows exactly that and nothing more:

    class Counter(Agent):
        @classmethod
        def redis_access(cls, params, *, graph, agent, home):
            return RedisAccess(grants=(KeyGrant(home, ("get", "set"), (f"counter:{graph}:{agent}",)),))

A ``KeyGrant`` pairs commands with the keys they may touch, on one instance: a command
of one grant never reaches the keys of another. Key patterns are Redis glob patterns.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# A command name as ACL rules write it: GET, xinfo|stream, AI.DAGEXECUTE.
_COMMAND = re.compile(r"^[A-Za-z][A-Za-z0-9_.\-]*(\|[A-Za-z][A-Za-z0-9_\-]*)?$")


@dataclass(frozen=True)
class KeyGrant:
    """Commands an agent may run on one Redis instance, on the keys matching ``keys``.

    Without keys the grant is for commands that name no key (``module|list``).
    """

    instance: str
    commands: tuple[str, ...]
    keys: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for command in self.commands:
            if not _COMMAND.match(command):
                raise ValueError(f"not a Redis command name: {command!r} (write e.g. 'get' or 'xinfo|stream')")
        for key in self.keys:
            if not key or any(c.isspace() for c in key) or "(" in key or ")" in key:
                raise ValueError(f"not a usable key pattern: {key!r} (no spaces or parentheses)")


@dataclass(frozen=True)
class RedisAccess:
    """An agent's Redis needs beyond its ports.

    ``observe``: read what ``graphrun status`` reads (every agent's health and every
    stream's length, groups and dead letters, on every instance of the graph): for
    agents that show the graph's health, such as the HMI.

    ``requests``: the agent makes requests into the graph (``graphrun.AsyncGraphClient``,
    as the HTTP gateway does), to these ``AGENT.PORT`` inputs, or to every input of the
    graph with True: it may append to their streams, take a request back (XDEL) and read
    their backlog, and read, trim and delete its own reply streams (see ``replies``).
    """

    grants: tuple[KeyGrant, ...] = ()
    observe: bool = False
    requests: bool | tuple[str, ...] = False
