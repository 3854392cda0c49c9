"""Redis ACL users from a graph: each agent may touch its own streams and keys, nothing else.

One user per agent, ``<graph>-<agent>``, on every Redis instance it uses:

- on the instance of each input: read it through its consumer group (XREADGROUP, XACK,
  XCLAIM, XAUTOCLAIM, XPENDING, XINFO, XGROUP CREATE) and trim what every group has
  acknowledged (XTRIM, what a full Redis gives back); its read counters
  (``graphrun:stats:<stream>``); append to the input's dead-letter stream;
- on the instance of each output: append to it (XADD) and trim it the same way;
- on its home instance: its own health record and start counter;
- the graph's message index (``graphrun:index:<graph>:*``) where it writes messages or
  dead letters: an index list is named by a payload's value, not by its writer;
- the reply streams of callers outside the graph (``graphrun:reply:<graph>:*``), on its
  home instance and its outputs' (a request names the port that answers it, not the graph);
- whatever its class declares through ``Agent.redis_access`` (``access``);
- with ``RedisAccess.requests`` (the HTTP gateway): append to the input streams it makes
  requests to, take them back and read their backlog, and read its own reply streams;
- without keys: PING, INFO (a server's run id tells a restart), CLIENT SETNAME (redis-py
  tries CLIENT SETINFO too and goes on when refused: Redis 7.0 does not know it),
  MULTI/EXEC/DISCARD (its writes and acknowledgements go together).

Each set of commands is an ACL selector paired with exactly its keys, so XADD never
reaches an input, nor XREADGROUP an output. No user gets FLUSHALL, CONFIG, KEYS, SCAN or
any other key. Consumer group names are not covered by Redis ACLs: an agent able to read
a stream could read it through another group's name.

``<graph>-observer`` may only read: every stream of the graph and its dead letters,
health records and the message index: what ``graphrun status``, ``echo``, ``hz``,
``trace`` and ``record`` need. (``dead requeue``/``purge`` write: run them as an admin.)

Passwords are never in the graph: ``GRAPHRUN_REDIS_PASSWORD_<AGENT>`` (or ``..._FILE``)
for the ACL file's hashes (see ``password_secret``); an agent process itself is given
``GRAPHRUN_REDIS_USER`` and ``GRAPHRUN_REDIS_PASSWORD`` (``credentials``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from .access import KeyGrant, RedisAccess
from .calls import reply_instance
from .errors import ConfigError
from .graph import AgentNode, Graph
from .health import health_key, starts_key
from .index import PREFIX as INDEX_PREFIX
from .observe import streams_of
from .replies import callers_of, reply_key
from .secrets import read_secret
from .transport import STATS_PREFIX

OBSERVER = "observer"
#: Commands that name no key, for every user.
CONNECTION = ("ping", "info", "select", "client|setname", "multi", "exec", "discard")
OBSERVER_CONNECTION = ("ping", "select", "client|setname")
INPUT_STREAM = ("xreadgroup", "xack", "xclaim", "xautoclaim", "xpending", "xinfo|stream", "xinfo|groups",
                "xinfo|consumers", "xgroup|create", "xgroup|createconsumer", "xtrim")
READ_COUNTERS = ("hsetnx", "hincrby", "hgetall")
OUTPUT_STREAM = ("xadd", "xtrim", "xinfo|groups", "xpending")
DEAD_LETTERS = ("xadd",)
INDEX = ("rpush", "ltrim", "expire")
HEALTH = ("hset", "hgetall", "pexpire", "hincrby")
REPLIES = ("xadd", "expire")
REQUESTS = ("xadd", "xdel", "xlen", "xrange", "xinfo|groups")  # a client's, on the ports it posts to
CALLER = ("xread", "xtrim", "del")  # a client's, on its own reply streams
OBSERVE_STREAMS = ("exists", "type", "xlen", "xrange", "xrevrange", "xread", "xinfo|stream", "xinfo|groups",
                   "xinfo|consumers", "xpending")
OBSERVE_HASHES = ("hgetall", "hget")
OBSERVE_INDEX = ("lrange", "llen")
FORMATS = ("aclfile", "commands")


def user_name(graph: Graph | str, role: str) -> str:
    """The ACL user of an agent (or of the observer) of ``graph``."""
    return f"{graph if isinstance(graph, str) else graph.name}-{role}"


def password_secret(role: str) -> str:
    """The secret holding the password of an agent's user, for ``graphrun acl`` and compose:
    ``redis_password_<agent>`` is ``GRAPHRUN_REDIS_PASSWORD_<AGENT>`` or its ``_FILE``."""
    return f"redis_password_{role}"


def password_hash(password: str) -> str:
    """How an ACL file holds a password: its SHA-256, so the file gives no password away."""
    return "#" + hashlib.sha256(password.encode()).hexdigest()


def escape(key: str) -> str:
    """A key as an ACL pattern matching it alone (glob characters escaped)."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in key)


@dataclass(frozen=True)
class Selector:
    """Commands paired with the keys they may touch (an ACL selector); no keys: keyless."""

    commands: tuple[str, ...]
    keys: tuple[str, ...] = ()  # ACL patterns, already escaped where exact

    def rule(self) -> str:
        return "(" + " ".join([*(f"+{c}" for c in self.commands), *(f"~{k}" for k in self.keys)]) + ")"


@dataclass
class User:
    """One ACL user: what it may run on each Redis instance of the graph it uses."""

    name: str
    role: str  # the agent's name, or "observer"
    keyless: tuple[str, ...]
    selectors: dict[str, list[Selector]] = field(default_factory=dict)  # instance -> selectors

    def add(self, instance: str, commands: Iterable[str], keys: Iterable[str]) -> None:
        keys = tuple(dict.fromkeys(keys))
        selectors = self.selectors.setdefault(instance, [])
        if keys or commands:
            selectors.append(Selector(tuple(dict.fromkeys(commands)), keys))

    def rules(self, instance: str) -> list[str]:
        """The rules after the password: no key, no channel, no command but those granted."""
        return ["resetchannels", "resetkeys", "-@all", *(f"+{c}" for c in self.keyless),
                *(s.rule() for s in self.selectors.get(instance, []))]


# --- what each user may do -----------------------------------------------------------------


def agent_user(graph: Graph, agent: AgentNode) -> User:
    """The user of one agent, from its ports and what its class declares."""
    user = User(user_name(graph, agent.name), agent.name, CONNECTION)
    by_instance: dict[str, list] = {}
    for binding in agent.inputs.values():
        by_instance.setdefault(binding.instance, []).append(binding)
    for instance, bindings in by_instance.items():
        streams = [escape(b.key) for b in bindings]
        user.add(instance, INPUT_STREAM, streams)  # one selector: XREADGROUP reads them all at once
        user.add(instance, READ_COUNTERS, [escape(STATS_PREFIX + b.key) for b in bindings])
    dead: dict[str, list[str]] = {}
    for binding in agent.inputs.values():
        dead.setdefault(binding.dead_letter.instance, []).append(escape(binding.dead_letter.key))
    for instance, keys in dead.items():
        user.add(instance, DEAD_LETTERS, keys)
    outputs: dict[str, list[str]] = {}
    for binding in agent.outputs.values():
        outputs.setdefault(binding.instance, []).append(escape(binding.key))
    for instance, keys in outputs.items():
        user.add(instance, OUTPUT_STREAM, keys)
    index = escape(f"{INDEX_PREFIX}{graph.name}:") + "*"
    for instance in sorted({*dead, *(b.instance for b in agent.outputs.values() if b.index)}):
        user.add(instance, INDEX, [index])
    home = graph.home_redis(agent.name)
    user.add(home, HEALTH, [escape(health_key(graph.name, agent.name)), escape(starts_key(graph.name, agent.name))])
    replies = escape(reply_key(graph.name, "")) + "*"
    for instance in sorted({home, *outputs}):  # answers to requests from outside, where callers wait
        user.add(instance, REPLIES, [replies])
    for instance in agent.instances:  # the runner connects to every one: PING, INFO
        user.selectors.setdefault(instance, [])
    access = declared_access(graph, agent)
    for grant in access.grants:
        user.add(grant.instance, grant.commands, grant.keys)
    if access.observe:
        _add_observing(user, graph)
    if access.requests:
        _add_requesting(user, graph, agent.name, access.requests)
    return user


def declared_access(graph: Graph, agent: AgentNode) -> RedisAccess:
    """What the agent's class says it needs beyond its ports, checked against the graph."""
    home = graph.home_redis(agent.name)
    access = agent.agent_class.redis_access(agent.settings, graph=graph.name, agent=agent.name, home=home)
    if not isinstance(access, RedisAccess):
        raise ConfigError(f"agent {agent.name!r}: {agent.agent_class.__qualname__}.redis_access() returned "
                          f"{type(access).__name__}, not a graphrun RedisAccess")
    for grant in access.grants:
        if not isinstance(grant, KeyGrant):
            raise ConfigError(f"agent {agent.name!r}: redis_access() grants {grant!r}, not a graphrun KeyGrant")
        if grant.instance not in graph.redis:
            raise ConfigError(f"agent {agent.name!r} asks for access to Redis instance {grant.instance!r}, which "
                              f"graph {graph.name!r} does not have (instances: {', '.join(graph.redis)})")
    return access


def _add_requesting(user: User, graph: Graph, agent: str, ports: bool | tuple[str, ...]) -> None:
    """What a client inside the agent (``graphrun.AsyncGraphClient``) needs: append requests
    to the streams of ``ports`` (every input of the graph with True), take them back and read
    their backlog; read, trim and delete its own reply streams (``replies.callers_of``)."""
    if ports is True:
        bindings = [b for node in graph.agents.values() for b in node.inputs.values()]
    else:
        bindings = []
        for name in ports:  # type: ignore[union-attr]
            target, _, port = name.rpartition(".")
            node = graph.agents.get(target)
            if node is None or port not in node.inputs:
                raise ConfigError(f"agent {agent!r} asks to make requests to {name!r}, which is no connected input "
                                  f"of graph {graph.name!r}")
            bindings.append(node.inputs[port])
    streams: dict[str, list[str]] = {}
    for binding in bindings:
        streams.setdefault(binding.instance, []).append(escape(binding.key))
    for instance, keys in streams.items():
        user.add(instance, REQUESTS, keys)
    user.add(reply_instance(graph.redis), CALLER, [escape(callers_of(graph.name, agent)) + "*"])


def observer_user(graph: Graph) -> User:
    """The user that may read the graph's streams, health and index, and nothing else."""
    user = User(user_name(graph, OBSERVER), OBSERVER, OBSERVER_CONNECTION)
    _add_observing(user, graph)
    return user


def _add_observing(user: User, graph: Graph) -> None:
    streams: dict[str, set[str]] = {}
    for ref, (_, readers) in streams_of(graph).items():
        streams.setdefault(ref.instance, set()).add(ref.key)
        for _, dead in readers:
            streams.setdefault(dead.instance, set()).add(dead.key)
    homes = {graph.home_redis(a) for a in graph.agents}
    for instance in graph.redis:
        keys = sorted(streams.get(instance, ()))
        if keys:
            user.add(instance, OBSERVE_STREAMS, [escape(k) for k in keys])
        hashes = [escape(STATS_PREFIX + k) for k in keys]
        if instance in homes:
            hashes += [escape(health_key(graph.name, "")) + "*", escape(starts_key(graph.name, "")) + "*"]
        if hashes:
            user.add(instance, OBSERVE_HASHES, hashes)
        user.add(instance, OBSERVE_INDEX, [escape(f"{INDEX_PREFIX}{graph.name}:") + "*"])


def users(graph: Graph, node: str | None = None) -> list[User]:
    """The users of the graph's agents (of one node's, with ``node``), then the observer."""
    if OBSERVER in graph.agents:
        raise ConfigError(f"graph {graph.name!r} has an agent named {OBSERVER!r}: that name is the read-only "
                          "user's; rename the agent")
    if node is not None and node not in graph.nodes:
        raise ConfigError(f"graph {graph.name!r} has no node {node!r} (nodes: {', '.join(graph.nodes)})")
    found = [agent_user(graph, a) for a in graph.agents_on(node)]
    return [*found, observer_user(graph)]


def instances_of(found: Iterable[User]) -> list[str]:
    seen: dict[str, None] = {}
    for user in found:
        seen.update(dict.fromkeys(user.selectors))
    return list(seen)


# --- writing them out -----------------------------------------------------------------------


def aclfile(found: Iterable[User], instance: str, passwords: Mapping[str, str | None]) -> str:
    """An ACL file for one Redis instance (``--aclfile``): the default user off, then every
    user of that instance; a user without a password is off (it cannot log in)."""
    lines = ["user default off resetpass resetkeys resetchannels -@all"]
    for user in found:
        if instance in user.selectors:
            lines.append(" ".join(["user", user.name, *_login(passwords.get(user.name)), *user.rules(instance)]))
    return "\n".join(lines) + "\n"


def commands(found: Iterable[User], instance: str, passwords: Mapping[str, str | None]) -> list[list[str]]:
    """ACL SETUSER commands giving one instance the users (for a running server)."""
    out = []
    for user in found:
        if instance in user.selectors:
            out.append(["ACL", "SETUSER", user.name, "reset", *_login(passwords.get(user.name)), *user.rules(instance)])
    return out


def passwords(found: Iterable[User], environ: Mapping[str, str] | None = None) -> dict[str, str | None]:
    """Each user's password from its secret (``password_secret``); None where it is not set."""
    return {user.name: read_secret(password_secret(user.role), environ=environ) for user in found}


def _login(password: str | None) -> list[str]:
    return ["on", password_hash(password)] if password else ["off"]

