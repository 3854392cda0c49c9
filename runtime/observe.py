"""What a running graph looks like now: its agents' heartbeats and its streams' backlogs.

``graphrun status`` draws these views, the HMI shows them, and the container health
check asks them about one agent; all three read the same heartbeat, so they agree.

An agent's state comes from its replicas' health records (``health``): the worst one
wins, so a degraded or stale replica is not hidden behind a running one. A record
older than ``health.STALE_INTERVALS`` of its health interval (and ``health.STALE_MIN``)
is "stale": the replica is gone or hung. Rates of agents come from the records themselves (two successive
records); a stream's write rate needs two looks, so an ``Observer`` keeps the last.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import redis

from . import transport
from .errors import GraphNotRunning
from .graph import Graph, StreamRef
from .health import health_key, stale
from .locate import RunningGraph, connect
from .transport import text

# Which state an agent shows when its replicas differ: the first that any replica is in.
STATE_ORDER = ("degraded", "stale", "starting", "stopping", "running", "stopped")
NO_HEARTBEAT = "no heartbeat"


@dataclass
class ReplicaView:
    """One replica's last health record, judged against the clock."""

    consumer: str
    state: str
    age: float  # seconds since its record
    reason: str | None
    record: dict[str, Any]

    @property
    def live(self) -> bool:
        """Fresh and not stopped: the replica is there and says so."""
        return self.state not in ("stale", "stopped")


@dataclass
class AgentView:
    name: str
    declared: int  # replicas the graph asks for
    replicas: list[ReplicaView]
    unreachable: str | None = None  # why its home Redis could not be read

    @property
    def seen(self) -> int:
        return sum(r.live for r in self.replicas)

    @property
    def state(self) -> str:
        if not self.replicas:
            return NO_HEARTBEAT
        return min((r.state for r in self.replicas), key=_rank)

    @property
    def reason(self) -> str | None:
        if self.unreachable:
            return self.unreachable
        reasons = [f"{r.consumer}: {r.reason}" if len(self.replicas) > 1 else r.reason
                   for r in self.replicas if r.state == self.state and r.reason]
        return "; ".join(reasons) or None

    def _sum(self, key: str, replicas: Iterable[ReplicaView] | None = None) -> Any:
        values = [r.record.get(key) for r in (self.replicas if replicas is None else replicas)]
        known = [v for v in values if isinstance(v, (int, float))]
        return sum(known) if known else None

    @property
    def in_per_s(self) -> float | None:
        return self._sum("in_per_s", [r for r in self.replicas if r.live])

    @property
    def out_per_s(self) -> float | None:
        return self._sum("out_per_s", [r for r in self.replicas if r.live])

    @property
    def failed(self) -> int:
        return self._sum("failed") or 0

    @property
    def dead_lettered(self) -> int:
        return self._sum("dead_lettered") or 0

    @property
    def trimmed(self) -> int:
        """Entries trimmed before this agent read them, over its inputs (a group's count,
        so the largest any replica reports, per input)."""
        per_input: dict[str, int] = {}
        for r in self.replicas:
            for port, n in (r.record.get("trimmed_before_read") or {}).items():
                per_input[port] = max(per_input.get(port, 0), int(n or 0))
        return sum(per_input.values())

    @property
    def restarts(self) -> int:
        """Starts beyond each consumer's first, counted across its processes."""
        return sum(max(0, int(r.record.get("starts") or 0) - 1) for r in self.replicas)

    @property
    def last_error(self) -> str | None:
        erred = [r for r in self.replicas if r.record.get("last_error")]
        return max(erred, key=lambda r: r.record.get("time", 0)).record["last_error"] if erred else None


@dataclass
class GroupView:
    """A consumer group on a stream: the agent that reads it, and how far behind it is."""

    group: str
    lag: int | None  # entries not yet read (None: Redis cannot count them)
    pending: int  # read, not yet acknowledged
    dead_letter: str  # its dead-letter stream


@dataclass
class StreamView:
    ref: StreamRef
    writers: list[str] = field(default_factory=list)  # agents of the graph that write it
    length: int | None = None  # None: the stream does not exist (yet)
    added: int | None = None  # entries ever added, for the write rate
    write_per_s: float | None = None
    groups: list[GroupView] = field(default_factory=list)
    dead: int = 0  # entries in the dead-letter streams of its readers
    unreachable: str | None = None


@dataclass
class GraphView:
    graph: str
    time: float
    agents: list[AgentView]
    streams: list[StreamView]
    unreachable: dict[str, str]  # Redis instance -> why


def _rank(state: str) -> int:
    return STATE_ORDER.index(state) if state in STATE_ORDER else -1  # an unknown state is shown first


def judge(consumer: str, record: Mapping[str, Any], now: float) -> ReplicaView:
    """A record as it stands now: stale when its heartbeat is older than five intervals (and two seconds)."""
    age = max(0.0, now - float(record.get("time", 0)))
    state = str(record.get("state", "running"))
    reason = record.get("reason")
    if state != "stopped" and stale(record, now):
        state, reason = "stale", f"no heartbeat for {age:.0f} s (was {record.get('state')})"
    return ReplicaView(consumer, state, age, reason, dict(record))


def read_agent(client: redis.Redis, graph: Graph, agent: str, now: float) -> AgentView:
    """One agent's replicas, from the health hash on its home Redis."""
    raw = client.hgetall(health_key(graph.name, agent))
    replicas = sorted((judge(c.decode(), json.loads(r), now) for c, r in raw.items()), key=lambda r: r.consumer)
    return AgentView(agent, graph.agents[agent].replicas, replicas)


def streams_of(graph: Graph) -> dict[StreamRef, tuple[list[str], list[tuple[str, StreamRef]]]]:
    """Every stream of the graph, written or read: its writers, and (group, dead-letter
    stream) of its readers."""
    found: dict[StreamRef, tuple[list[str], list[tuple[str, StreamRef]]]] = {}
    for node in graph.agents.values():
        for output in node.outputs.values():
            found.setdefault(output.stream, ([], []))[0].append(node.name)
        for binding in node.inputs.values():
            found.setdefault(binding.stream, ([], []))[1].append((node.name, binding.dead_letter))
    return found


def read_stream(client: redis.Redis, ref: StreamRef, readers: list[tuple[str, StreamRef]],
                dead_client: Mapping[str, redis.Redis], writers: list[str] | None = None) -> StreamView:
    """Length, entries ever added and each reader's lag and pending count.

    Entries added come from a group's ``entries-read + lag`` where a group can tell
    (cheap), else from XINFO STREAM, which also sends the first and last entries.
    """
    view = StreamView(ref, list(writers or []))
    pipe = client.pipeline(transaction=False)
    pipe.exists(ref.key)
    pipe.xlen(ref.key)
    exists, length = pipe.execute()
    if exists:
        view.length = int(length)
        by_name = {text(g["name"]): g for g in client.xinfo_groups(ref.key)}
        for group, dead in readers:
            info = by_name.get(group)
            lag = None if info is None or info.get("lag") is None else int(info["lag"])
            view.groups.append(GroupView(group, lag if info is not None else view.length,
                                         int(info["pending"]) if info else 0, str(dead)))
            if info is not None and lag is not None and info.get("entries-read") is not None:
                view.added = int(info["entries-read"]) + lag
        if view.added is None:
            view.added = int(client.xinfo_stream(ref.key).get("entries-added", view.length))
    else:
        view.groups = [GroupView(group, None, 0, str(dead)) for group, dead in readers]
    for dead in {d for _, d in readers}:
        dclient = dead_client.get(dead.instance)
        if dclient is not None:
            view.dead += int(dclient.xlen(dead.key))
    return view


class Observer:
    """Looks at a running graph again and again; keeps the last look for write rates."""

    def __init__(self, running: RunningGraph):
        self.running = running
        self._last: dict[StreamRef, tuple[float, int]] = {}  # stream -> (time, entries added)

    def agents(self, now: float | None = None) -> list[AgentView]:
        graph = self.running.graph
        now = time.time() if now is None else now
        views = []
        for name in graph.agents:
            home = graph.home_redis(name)
            client = self.running.clients.get(home)
            if client is None:
                views.append(AgentView(name, graph.agents[name].replicas, [],
                                       unreachable=self.running.unreachable.get(home, "unreachable")))
                continue
            try:
                views.append(read_agent(client, graph, name, now))
            except (*transport.CONNECTION_ERRORS, redis.ResponseError) as exc:
                views.append(AgentView(name, graph.agents[name].replicas, [], unreachable=f"Redis {home}: {exc}"))
        return views

    def streams(self) -> list[StreamView]:
        graph, clients = self.running.graph, self.running.clients
        views = []
        for ref, (writers, readers) in sorted(streams_of(graph).items(), key=lambda item: str(item[0])):
            client = clients.get(ref.instance)
            if client is None:
                views.append(StreamView(ref, writers, unreachable=self.running.unreachable.get(ref.instance,
                                                                                              "unreachable")))
                continue
            try:
                view = read_stream(client, ref, readers, clients, writers)
            except (*transport.CONNECTION_ERRORS, redis.ResponseError) as exc:
                views.append(StreamView(ref, writers, unreachable=f"Redis {ref.instance}: {exc}"))
                continue
            now = time.time()  # when this stream was read: a slow look elsewhere does not skew its rate
            last = self._last.get(ref)
            if view.added is not None:
                if last is not None and now > last[0]:
                    view.write_per_s = max(0, view.added - last[1]) / (now - last[0])
                self._last[ref] = (now, view.added)
            views.append(view)
        return views

    def look(self) -> GraphView:
        now = time.time()
        return GraphView(self.running.graph.name, now, self.agents(now), self.streams(),
                         dict(self.running.unreachable))


def as_json(view: GraphView) -> dict[str, Any]:
    """A view as plain JSON for a page: per agent its state and heartbeat age, per stream
    each group's lag and pending count; what is stale says so."""
    agents = [{"name": a.name, "state": a.state, "reason": a.reason, "replicas": [a.seen, a.declared],
               "trimmed": a.trimmed, "age": min((r.age for r in a.replicas), default=None),
               "stale": a.state in ("stale", NO_HEARTBEAT) or a.unreachable is not None} for a in view.agents]
    streams = [{"stream": str(s.ref), "length": s.length, "write_per_s": s.write_per_s, "dead": s.dead,
                "unreachable": s.unreachable,
                "groups": [{"group": g.group, "lag": g.lag, "pending": g.pending} for g in s.groups]}
               for s in view.streams]
    return {"graph": view.graph, "time": view.time, "agents": agents, "streams": streams,
            "unreachable": view.unreachable, "stale": False}


class GraphHealth:
    """The health of the graph an agent runs in, for agents that show it (the HMI).

    ``snapshot`` may be called from any thread, as often as a page polls: it looks at the
    graph at most every ``min_interval`` seconds (heartbeats come every two) and otherwise
    answers the last look. When a look fails, the last one is answered marked stale, with
    its age. Outside a runner (the test harness) there is no graph: ``snapshot`` is None.
    """

    def __init__(self, agent: Any, *, min_interval: float = 1.0):
        # Imported here: the runner imports every agent, and agents import this module.
        from .runner import AgentRunner

        context = getattr(agent, "_context", None)
        self._runner = context if isinstance(context, AgentRunner) else None
        self._min_interval = min_interval
        self._observer: Observer | None = None
        self._last: dict[str, Any] | None = None
        self._looked = 0.0
        self._lock = threading.Lock()

    def snapshot(self) -> dict[str, Any] | None:
        if self._runner is None:
            return None
        with self._lock:
            if time.monotonic() - self._looked >= self._min_interval:
                self._looked = time.monotonic()
                try:
                    if self._observer is None:
                        # The URLs the runner was given (the engine's own: no agent reads them).
                        urls = self._runner._overrides
                        self._observer = Observer(connect(self._runner.graph, urls))
                    view = self._observer.look()
                    if view.agents and all(a.unreachable for a in view.agents):
                        raise GraphNotRunning("; ".join(sorted({str(a.unreachable) for a in view.agents})))
                    self._last = as_json(view)
                except (GraphNotRunning, *transport.CONNECTION_ERRORS, redis.ResponseError) as exc:
                    self._last = {**(self._last or {"agents": [], "streams": []}), "stale": True,
                                  "error": str(exc)}
            if self._last is None:
                return None
            return {**self._last, "age": time.time() - self._last["time"] if "time" in self._last else None}

    def close(self) -> None:
        with self._lock:
            if self._observer is not None:
                self._observer.running.close()
                self._observer = None
