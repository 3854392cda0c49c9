"""The faults ``bench/faults.py`` injects, one scenario per run.

Scenarios are derived from the graph at run time (one ``kill-AGENT`` per agent, one
``kill-redis-INSTANCE`` per Redis instance the launcher starts), so a graph that gains an
agent (a trigger, say) gains its scenario without a change here.
"""

from __future__ import annotations

import json
import os
import signal
import time
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import redis
from fault_line import Line
from graphrun import Graph
from graphrun.message import SCHEMA_VERSION
from typing_extensions import NotRequired, is_typeddict


@dataclass(frozen=True)
class Injected:
    """One entry the harness wrote to an input stream, and the agents that read that stream."""

    instance: str
    key: str
    id: str
    kind: str
    readers: tuple[str, ...]
    malformed: bool  # every reader should dead-letter it
    t0: float  # the chain origin in its header: what the line makes of it is told apart by it


@dataclass
class Scenario:
    """One fault, injected once in a run; ``injected`` keeps what the malformed scenario wrote, to tell
    its dead letters (and what the line made of its entries) from the line's own."""

    name: str
    what: str
    inject: Callable[[Line, dict[str, str]], str]  # (line, redis urls) -> what was done
    injected: list[Injected] = field(default_factory=list)


def scenarios(graph: Graph, *, outage: float, skip: tuple[type, ...] = ()) -> list[Scenario]:
    """Every scenario for ``graph``, baseline first; agents of the ``skip`` classes get no kill scenario."""
    found = [Scenario("baseline", "no fault: the line's own losses and stalls", lambda line, urls: "nothing injected")]
    for name, agent in graph.agents.items():
        if skip and issubclass(agent.agent_class, skip):
            continue
        found.append(Scenario(f"kill-{name}", f"kill -9 of agent {name} (the launcher restarts it)", _kill_agent(name)))
    for instance, spec in graph.redis.items():
        found.append(Scenario(f"kill-redis-{instance}",
                              f"kill -9 of redis {instance} (persistence {spec.persistence}; the launcher restarts it)",
                              _kill_redis(instance)))
    found.append(Scenario("plc-stop", f"PLC link down {outage:.0f} s, PLC memory kept", _plc_stop(outage)))
    found.append(Scenario("plc-restart", "PLC killed and back 1 s later with its memory cleared", _plc_restart))
    malformed = Scenario("malformed", "malformed entries on every input stream", lambda line, urls: "")
    malformed.inject = lambda line, urls: _malformed(line, urls, malformed.injected)
    found.append(malformed)
    return found


def _kill_agent(name: str) -> Callable[[Line, dict[str, str]], str]:
    def inject(line: Line, urls: dict[str, str]) -> str:
        pids = line.agent_pids(name)
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        return f"killed {name} (pid {', '.join(map(str, pids))})" if pids else f"no process of {name} found"
    return inject


def _kill_redis(instance: str) -> Callable[[Line, dict[str, str]], str]:
    def inject(line: Line, urls: dict[str, str]) -> str:
        pid = line.redis_pid(instance, urls[instance])
        if pid is None:
            return f"no redis-server of the launcher's found for {instance}"
        os.kill(pid, signal.SIGKILL)
        return f"killed redis {instance} (pid {pid})"
    return inject


def _plc_stop(outage: float) -> Callable[[Line, dict[str, str]], str]:
    def inject(line: Line, urls: dict[str, str]) -> str:
        for plc in line.plcs:
            plc.stop()
        time.sleep(outage)
        for plc in line.plcs:
            plc.start()
        return f"stopped {', '.join(p.agent + ' PLC' for p in line.plcs)} for {outage:.0f} s"
    return inject


def _plc_restart(line: Line, urls: dict[str, str]) -> str:
    for plc in line.plcs:
        plc.sim.stop()
    time.sleep(1.0)
    for plc in line.plcs:
        plc.replace()
    return f"restarted {', '.join(p.agent + ' PLC' for p in line.plcs)} with cleared memory"


# --- malformed entries -----------------------------------------------------------------------


def _hints(payload_type: type | None) -> tuple[dict[str, Any], set[str]]:
    """The keys of a TypedDict with their types, and the required ones.

    Read from the hints, not ``__required_keys__``: with postponed annotations Python cannot
    see ``NotRequired`` in the class body (``PartTrigger.part_id`` would look required).
    """
    if payload_type is None or not is_typeddict(payload_type):
        return {}, set()
    hints = typing.get_type_hints(payload_type, include_extras=True)
    optional = {k for k, h in hints.items() if typing.get_origin(h) is NotRequired}
    stripped = {k: (typing.get_args(h)[0] if k in optional else h) for k, h in hints.items()}
    return stripped, set(hints) - optional


def _wrong(hint: Any) -> Any:
    """A value of the wrong type for ``hint``: an int gets True, a float "high" (bool is not a number)."""
    if hint is bool:
        return "yes"
    if hint is int:
        return True
    if hint is float or float in typing.get_args(hint):
        return "high"
    if hint is str:
        return 12
    if hint is np.ndarray:
        return "pixels"
    return 3.5


def _valid(hint: Any) -> Any:
    """A value of the right type for ``hint`` (arrays aside): for entries that are wrong in one value only."""
    if hint is bool:
        return False
    if hint is int:
        return 0
    if hint is float or float in typing.get_args(hint):
        return 0.5
    if hint is str:
        return "faults"
    return None


def malformed_entries(payload_type: type | None, t0: float) -> list[tuple[str, dict[bytes, Any], bool]]:
    """(kind, fields, malformed) for one input stream of ``payload_type``; headers carry ``t0``."""

    def _header(payload: Any, *, version: int = SCHEMA_VERSION) -> bytes:
        return json.dumps({"v": version, "id": "faults-bench", "from": "faults", "t0": t0, "hops": [],
                           "p": payload}).encode()

    hints, required = _hints(payload_type)
    entries: list[tuple[str, dict[bytes, Any], bool]] = [
        ("no header field", {b"junk": b"not a message"}, True),
        ("header not JSON", {b"h": b"{not json"}, True),
        ("unknown schema version", {b"h": _header({}, version=999)}, True),
        ("payload not a mapping", {b"h": _header([1, 2, 3])}, True),
    ]
    if hints:
        entries.append(("payload missing every key", {b"h": _header({})}, bool(required)))
        wrong = {k: _wrong(h) for k, h in hints.items()}
        named = [k for k in ("part_id", "score") if k in wrong] or list(wrong)[:3]
        shown = ", ".join(f"{k}={wrong[k]!r}" for k in named)
        entries.append((f"wrong value types ({shown}, ...)", {b"h": _header(wrong)}, True))
    arrays = [k for k, h in hints.items() if h is np.ndarray]
    if "part_id" in hints and not arrays:
        # well typed, but no PLC register holds a negative id: whoever writes it must refuse it
        payload = {k: _valid(h) for k, h in hints.items() if k in required or k == "part_id"}
        entries.append(("part_id -1, every value of the right type", {b"h": _header({**payload, "part_id": -1})}, False))
    if arrays:
        header = json.loads(_header({}).decode())
        header["p"] = {k: {"__ndarray__": "b0", "dtype": "|u1", "shape": [480, 640]} for k in arrays}
        entries.append(("array buffer truncated", {b"h": json.dumps(header).encode(), b"b0": b"\0" * 10}, True))
    return entries


def _malformed(line: Line, urls: dict[str, str], injected: list[Injected]) -> str:
    """XADD the malformed entries to every input stream of the graph, once per stream."""
    streams: dict[tuple[str, str], tuple[type | None, list[str]]] = {}
    for name, agent in line.graph.agents.items():
        ports = agent.agent_class.ports()
        groups = {p: g for g, members in agent.groups.items() for p in members}
        for port, binding in agent.inputs.items():
            declared = ports.get(port) or ports.get(groups.get(port, ""))
            ref = (binding.instance, binding.key)
            streams.setdefault(ref, (getattr(declared, "type", None), []))[1].append(name)
    for (instance, key), (payload_type, readers) in streams.items():
        client = redis.Redis.from_url(urls[instance], socket_timeout=5.0)
        try:
            t0 = time.time()
            for kind, fields, bad in malformed_entries(payload_type, t0):
                entry_id = client.xadd(key, fields).decode()
                injected.append(Injected(instance, key, entry_id, kind, tuple(readers), bad, t0))
        finally:
            client.close()
    return f"{len(injected)} malformed entries on {len(streams)} input streams"

