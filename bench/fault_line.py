"""The line under test for ``bench/faults.py``: a private copy of a graph, run by ``graphrun run``.

Why a copy: the harness must not collide with a line (or a test) already running on this
machine, nor reach outside it. So every ``port`` parameter gets a free local port (the same
old value gets the same new port, which keeps a Modbus agent and its PLC simulator paired),
every ``host`` parameter becomes 127.0.0.1, and Redis instances lose their ``url`` so the
launcher starts its own servers in the run's state folder.

Why the harness hosts the PLC itself: the PLC's record of results is the figure that
matters, and it must outlive the faults the harness injects. Agents of the ``modbus.plc_sim``
kind are left out of the copy and replaced by one in-process ``PlcSimulator`` per Modbus
agent, on that agent's (rewritten) port, with its register map and unit. The harness can
then cut the PLC link (``stop``/``start``, memory kept) or replace the PLC by a fresh one
(memory lost, as a killed ``plc_sim`` agent would come back) without losing the record.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Iterable
from typing import IO, Any

import psutil
import redis
import yaml
from graphrun import Graph, load_graph
from graphrun.redis_server import dies_with_owner
from graphrun_agents.modbus.agent import ModbusAgent
from graphrun_agents.modbus.sim_agent import PlcSimAgent
from graphrun_agents.modbus.simulator import PlcResult, PlcSimulator

STOP_GRACE = 30.0  # seconds the launcher gets for an orderly stop before its tree is killed
_ENV_REF = re.compile(r"\$\{(\w+)(?::-([^}]*))?\}")


def free_port() -> int:
    """A free local port below the kernel's ephemeral range.

    Why not bind(0): a port chosen so is free only until the agent binds it, seconds later,
    and meanwhile every bind(0) on the machine (the launcher's own redis-servers, tests)
    draws from the same ephemeral range. Below it, only programs that ask for a port by
    number can take it.
    """
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    first = max(1024, low - 12000)
    for port in random.sample(range(first, max(first + 1, low)), k=min(200, max(1, low - first))):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as sock:  # a crowded machine: the ephemeral range after all
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _expand(value: Any) -> Any:
    """A ``${NAME:-default}`` parameter as the graph would see it (ports are rewritten by value)."""
    if isinstance(value, str):
        return _ENV_REF.sub(lambda m: os.environ.get(m.group(1), m.group(2) or ""), value)
    return value


@dataclass(frozen=True)
class PlcWrite:
    """One result as a PLC received it, and which Modbus agent's PLC it was."""

    plc: str  # the Modbus agent writing to that PLC
    sequence: int
    part_id: int | None
    outcome: str  # the map's name for it: ok, defective, incomplete (or the raw value)
    received: float  # seconds since the epoch


class Plc:
    """The simulated PLC of one Modbus agent; its record survives stops and replacements."""

    def __init__(self, agent: str, node: Any, record: list[PlcWrite], lock: threading.Lock):
        settings = node.settings
        self.agent = agent
        self.port = int(settings.port)
        self._map, self._unit = settings.map, settings.unit
        self._outcomes = {v: k for k, v in settings.map.outcomes.model_dump().items()}
        self._record, self._lock = record, lock
        self.sim = self._new()

    def _new(self) -> PlcSimulator:
        return PlcSimulator(self._map, host="127.0.0.1", port=self.port, unit=self._unit, take_results=True,
                            on_result=self._received)

    def _received(self, result: PlcResult) -> None:
        part = result.values.get("part_id")
        outcome = result.values.get("outcome", result.values.get("defective"))
        if isinstance(outcome, bool):
            name = "defective" if outcome else "ok"
        else:
            name = self._outcomes.get(outcome, str(outcome))  # type: ignore[arg-type]
        write = PlcWrite(self.agent, result.sequence, None if part is None else int(part), name, result.received)
        with self._lock:
            self._record.append(write)

    def start(self) -> None:
        self.sim.start()

    def stop(self) -> None:
        self.sim.stop()

    def replace(self) -> None:
        """A PLC that comes back with its memory cleared (power cycle, or a killed plc_sim)."""
        self.sim.stop()
        self.sim = self._new()
        self.sim.start()


def prepare_graph(source: Path, folder: Path) -> tuple[Path, list[str]]:
    """Write the harness's copy of ``source`` into ``folder``; returns it and what was changed."""
    original = load_graph(source)
    raw = yaml.safe_load(source.read_text())
    notes: list[str] = []
    ports: dict[str, int] = {}
    for name, spec in list(raw.get("agents", {}).items()):
        if issubclass(original.agents[name].agent_class, PlcSimAgent):
            del raw["agents"][name]
            notes.append(f"{name} ({spec.get('type')}) is replaced by the harness's own PLC simulator")
            continue
        params = spec.get("params") or {}
        if "port" in params:
            old = str(_expand(params["port"]))
            params["port"] = ports.setdefault(old, free_port())
        if "host" in params:
            params["host"] = "127.0.0.1"
    for name, spec in (raw.get("redis") or {}).items():
        if isinstance(spec, dict) and spec.pop("url", None):
            notes.append(f"redis {name}: its url is dropped; the launcher starts a local server")
    if ports:
        notes.append("ports moved: " + ", ".join(f"{old} -> {new}" for old, new in ports.items()))
    copy = folder / source.name
    copy.write_text(yaml.safe_dump(raw, sort_keys=False))
    return copy, notes


def stop_launcher(process: subprocess.Popen[bytes], seen: Iterable[psutil.Process]) -> None:
    """SIGTERM to a launcher (it stops its agents and servers), SIGKILL after STOP_GRACE,
    then SIGKILL for every process of its tree seen earlier that is still there."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(STOP_GRACE)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    for proc in seen:
        with contextlib.suppress(psutil.Error):
            if proc.is_running():  # compares the start time too: never a recycled pid
                proc.kill()


class Line:
    """One run of the graph copy: its launcher, its PLCs, and the processes it started."""

    def __init__(self, source: Path, folder: Path):
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.source = source.resolve()
        self.graph_file, self.notes = prepare_graph(self.source, folder)
        self.graph: Graph = load_graph(self.graph_file)
        self.state = folder / "state"
        self.log_path = folder / "launcher.log"
        self.record: list[PlcWrite] = []
        self._record_lock = threading.Lock()
        self.plcs = [Plc(n, a, self.record, self._record_lock) for n, a in self.graph.agents.items()
                     if issubclass(a.agent_class, ModbusAgent)]
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._seen: dict[int, psutil.Process] = {}  # every descendant met, to kill leftovers at the end

    # --- starting and stopping -----------------------------------------------------------

    def start(self) -> None:
        for plc in self.plcs:
            plc.start()
        env = dict(os.environ)
        # The copy lives elsewhere: keep "module:Class" agent types next to the original importable.
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(self.source.parent), env.get("PYTHONPATH")) if p)
        self._log = self.log_path.open("wb")
        # Own session: a Ctrl-C meant for the harness reaches the launcher only as the harness's SIGTERM.
        # SIGTERM when the harness dies, however it dies: the launcher then stops its line.
        self.process = subprocess.Popen(
            [sys.executable, "-m", "graphrun", "run", str(self.graph_file), "--state-dir", str(self.state)],
            stdout=self._log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
            preexec_fn=dies_with_owner(signal.SIGTERM))  # noqa: PLW1509 - the hook only calls prctl

    def redis_urls(self, timeout: float = 30.0) -> dict[str, str]:
        """The launcher's Redis URLs (unix sockets), once it has written them."""
        path = self.state / "redis.json"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                return dict(json.loads(path.read_text()))
            except (OSError, ValueError):
                time.sleep(0.1)
        raise RuntimeError(f"the launcher wrote no {path} within {timeout:.0f} s; see {self.log_path}")

    def check_alive(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"the launcher exited with code {self.process.returncode}; see {self.log_path}")

    def stop(self) -> None:
        """Orderly stop, then SIGKILL for whatever of ours is left: the harness leaves nothing behind."""
        self._descendants()
        if self.process is not None:
            stop_launcher(self.process, self._seen.values())
        for plc in self.plcs:
            plc.stop()
        if self._log is not None:
            self._log.close()
            self._log = None

    # --- finding processes ---------------------------------------------------------------

    def _descendants(self) -> list[psutil.Process]:
        if self.process is None:
            return []
        try:
            found = psutil.Process(self.process.pid).children(recursive=True)
        except psutil.Error:
            return []
        for proc in found:
            self._seen.setdefault(proc.pid, proc)
        return found

    def agent_pids(self, agent: str) -> list[int]:
        """The processes (replicas) of ``agent``: ``... graphrun agent GRAPH AGENT ...`` under our launcher."""
        pids = []
        for proc in self._descendants():
            try:
                cmd = proc.cmdline()
            except psutil.Error:
                continue
            if "agent" in cmd:
                i = cmd.index("agent")
                if cmd[i + 1:i + 3] == [str(self.graph_file), agent]:
                    pids.append(proc.pid)
        return pids

    def redis_pid(self, instance: str, url: str) -> int | None:
        """The redis-server serving ``instance``, if the launcher started it.

        Asked of the server itself (INFO's process_id): redis-server rewrites its command
        line to "redis-server 127.0.0.1:PORT", so its arguments can't name the instance.
        """
        client = redis.Redis.from_url(url, socket_timeout=2.0)
        try:
            pid = int(client.info("server")["process_id"])
        except (redis.RedisError, KeyError, ValueError):
            return None
        finally:
            client.close()
        return pid if pid in {p.pid for p in self._descendants()} else None

    def writes(self) -> list[PlcWrite]:
        with self._record_lock:
            return list(self.record)

    def log_lines(self) -> list[str]:
        try:
            return self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return []
