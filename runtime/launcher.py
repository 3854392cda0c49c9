"""``graphrun run``: the whole graph (or one node of it) on this machine.

Starts a redis-server for every Redis instance that has no URL, runs each agent
replica as its own process, prefixes their output with their names, restarts a
crashed agent with exponential backoff, and on Ctrl-C or SIGTERM lets every agent
finish the message in hand before it stops.

What it starts does not outlive it, even when it is killed outright; the state folder
where it keeps Redis data is its alone while it runs; and a run in which some agent
never came up ends with a non-zero exit code that names it.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from secrets import token_urlsafe
from typing import IO

from . import acl, signals
from .backoff import Backoff
from .errors import ConfigError
from .graph import AgentNode, Graph, env_name, state_dir
from .logs import AgentLogFile
from .metrics import DEFAULT_HOST as METRICS_HOST
from .redis_server import RedisServer, dies_with_owner
from .secrets import REDIS_USER
from .tally import tally
from .transport import connect, describe

EXIT_CONFIG = 78  # an agent that exits with this cannot start: restarting would not help
STOP_GRACE = 15.0
STABLE_AFTER = 10.0  # a run this long resets the restart backoff
# `python -m graphrun`, but without the working folder first on sys.path: there a folder that
# happens to be named graphrun would be imported instead of the installed package, in every
# agent. Agents beside the graph file still import: the graph's folder is put on sys.path
# when the graph is loaded. (-P is Python 3.11's; before it, the bootstrap drops the entry.)
AGENT_COMMAND: tuple[str, ...] = (
    (sys.executable, "-P", "-m", "graphrun") if sys.version_info >= (3, 11) else
    (sys.executable, "-c", "import sys; del sys.path[0]; from graphrun.cli import main; raise SystemExit(main())"))
# What an agent logs once its start() returned (runner.py), the launcher's sign that it came up.
STARTED_LINE = "started as consumer"
LOCK_FILE = "launcher.lock"  # in the state folder; holds the pid of the launcher using it
# The Redis URLs an agent process is given (JSON, instance -> URL): as `--redis`, but out of `ps`.
URLS_VARIABLE = "GRAPHRUN_AGENT_REDIS_URLS"
PASSWORD_VARIABLE = "GRAPHRUN_REDIS_PASSWORD"  # a process's Redis password; also the prefix of each agent's


def _alive(pid: int) -> bool:
    """Whether a process with this pid exists (one we may not signal counts as existing)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class _Replica:
    node: AgentNode
    index: int
    label: str
    process: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    done: bool = False
    failed_to_start: bool = False
    came_up: bool = False  # once started (or finished, or ran stably): its crashes are not a failed launch
    crashes: int = 0
    last_code: int | None = None
    readers: list[threading.Thread] = field(default_factory=list)
    metrics_port: int | None = None  # its Prometheus endpoint, the same across its restarts
    log_file: AgentLogFile | None = None
    restart: Backoff = field(init=False)  # the delay before the next start; ready() when it may start

    def __post_init__(self) -> None:
        policy = self.node.spec.restart
        # A cap below the first delay makes every restart wait the cap.
        self.restart = Backoff(initial=min(policy.backoff_initial, policy.backoff_max), maximum=policy.backoff_max)


class Launcher:
    def __init__(self, graph: Graph, *, node: str | None = None, redis_urls: dict[str, str] | None = None,
                 state: Path | None = None, log_level: str = "INFO", out: IO[str] | None = None,
                 log_format: str = "text", log_dir: Path | None = None, metrics_port: int | None = None,
                 metrics_host: str = METRICS_HOST, secure: bool = False):
        self.graph = graph
        self.secure = secure
        self.passwords: dict[str, str] = {}  # ACL user -> password, with secure
        self.node = node
        self.overrides = dict(redis_urls or {})
        self.state = state or state_dir(graph)
        self.log_level = log_level
        self.log_format = log_format
        self.log_dir = log_dir
        self.metrics_host = metrics_host
        self.out = out or sys.stdout
        self.servers: dict[str, RedisServer] = {}
        self.urls: dict[str, str] = {}
        self._lock: IO[str] | None = None
        self._stop = threading.Event()
        self._print_lock = threading.Lock()
        self._began: float | None = None  # when the first agent was started (epoch seconds)
        agents = graph.agents_on(node)
        width = max((len(self._label(a, i)) for a in agents for i in range(a.replicas)), default=8)
        self.replicas = [_Replica(a, i, self._label(a, i).ljust(width)) for a in agents for i in range(a.replicas)]
        for number, replica in enumerate(self.replicas):
            replica.metrics_port = None if metrics_port is None else metrics_port + number

    @staticmethod
    def _label(agent: AgentNode, index: int) -> str:
        return agent.name if agent.replicas == 1 else f"{agent.name}.{index}"

    def say(self, text: str) -> None:
        with self._print_lock:
            print(text, file=self.out, flush=True)

    def request_stop(self) -> None:
        self._stop.set()

    # --- Redis -----------------------------------------------------------------------

    def _lock_state(self) -> None:
        """Take the state folder for this launcher's life, or say who has it.

        Two launchers on one folder would run two redis-servers on the same data files and
        overwrite each other's ``redis.json``. The lock is an flock, so the kernel releases
        it however the launcher ends, kill -9 included: there is never a stale lock to clear.
        The redis-servers hold it too (see ``_servers_fds``): after a kill -9 they still
        write their data out for a moment, and no new server may start on it meanwhile.
        """
        if self._lock is not None:
            return
        self.state.mkdir(parents=True, exist_ok=True)
        path = self.state / LOCK_FILE
        lock = path.open("a+")  # not truncated: the holder's pid stays readable until we hold it
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "unknown"
            lock.close()
            if holder.isdigit() and not _alive(int(holder)):
                raise ConfigError(f"state folder {self.state} is in use by the redis-server(s) of graphrun run pid "
                                  f"{holder}, which has ended; they stop with it: try again in a moment") from None
            raise ConfigError(f"state folder {self.state} is in use by another graphrun run (pid {holder}); "
                              f"stop that run, or give this one its own --state-dir") from None
        lock.seek(0)
        lock.truncate()
        lock.write(f"{os.getpid()}\n")
        lock.flush()
        self._lock = lock

    def _servers_fds(self) -> tuple[int, ...]:
        """What a redis-server of this launcher keeps open: the state folder's lock."""
        return (self._lock.fileno(),) if self._lock is not None else ()

    def _unlock_state(self) -> None:
        if self._lock is not None:
            self._lock.close()  # the file stays: removing it would race with a launcher taking it
            self._lock = None

    def _start_redis(self) -> None:
        needed = set().union(*(r.node.instances for r in self.replicas)) if self.replicas else set()
        for name in sorted(needed):
            spec = self.graph.redis[name]
            url = self.overrides.get(name) or spec.url or os.environ.get(env_name(name))
            if url:
                self.urls[name] = url
                self.say(f"graphrun: redis {name}: {describe(url)}")
                continue
            self._lock_state()  # only a launcher that keeps data there uses the folder
            aclfile, login = self._acl_file(name) if self.secure else (None, None)
            server = RedisServer(name=name, data_dir=self.state / f"redis-{name}", maxmemory=spec.maxmemory,
                                 persistence=spec.persistence, aclfile=aclfile, login=login)
            server.start(pass_fds=self._servers_fds())
            self.servers[name] = server
            self.urls[name] = server.unix_url  # agents on this machine take the faster unix socket
            self.say(f"graphrun: redis {name}: started {server.url} (unix socket {server.unix_socket}, "
                     f"data in {server.data_dir}, persistence {spec.persistence}, server {server.binary})")
        if self.servers:
            self.state.mkdir(parents=True, exist_ok=True)
            (self.state / "redis.json").write_text(json.dumps(self.urls, indent=2))

    # --- ACL users (secure) ---------------------------------------------------------------

    def _make_users(self) -> None:
        """Each agent's user and the observer, with their passwords: from their secrets
        (``GRAPHRUN_REDIS_PASSWORD_<AGENT>``, as Redis servers elsewhere were given them by
        ``graphrun acl``), else new ones for this run. The observer's is written to a file
        only this user can read, for ``graphrun status`` and the other tools."""
        self.users = acl.users(self.graph, self.node)
        given = acl.passwords(self.users)
        self.passwords = {u.name: given[u.name] or token_urlsafe(24) for u in self.users}
        observer = acl.user_name(self.graph, acl.OBSERVER)
        folder = self.state / "secrets"
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = folder / acl.OBSERVER
        path.touch(mode=0o600)
        path.chmod(0o600)
        path.write_text(self.passwords[observer] + "\n")
        self.say(f"graphrun: ACL users from the graph on the Redis servers started here; tools log in as "
                 f"{REDIS_USER}={observer} GRAPHRUN_REDIS_PASSWORD_FILE={path.resolve()}")

    def _acl_file(self, instance: str) -> tuple[Path, tuple[str, str]]:
        """The instance's ACL file (passwords as hashes only), and the readiness check's login."""
        path = self.state / "acl" / f"{instance}.acl"
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        path.write_text(acl.aclfile(self.users, instance, self.passwords))
        path.chmod(0o600)
        observer = acl.user_name(self.graph, acl.OBSERVER)
        return path, (observer, self.passwords[observer])

    def _environment(self, replica: _Replica) -> dict[str, str]:
        """A replica's environment: the Redis URLs (never on its command line, which ``ps``
        shows to every local user) and, with secure, its agent's credentials alone."""
        env = {**os.environ, **replica.node.spec.env, "PYTHONUNBUFFERED": "1", URLS_VARIABLE: json.dumps(self.urls)}
        if self.secure:
            for name in [n for n in env if n.startswith(PASSWORD_VARIABLE)]:
                del env[name]  # other agents' secrets, the launcher's own
            user = acl.user_name(self.graph, replica.node.name)
            env.update({REDIS_USER: user, PASSWORD_VARIABLE: self.passwords[user]})
        return env

    def _watch_redis(self) -> None:
        for name, server in self.servers.items():
            if not server.running:
                self.say(f"graphrun: redis {name} exited (code {server.process.returncode if server.process else '?'}); restarting it")
                try:
                    server.start(pass_fds=self._servers_fds())
                except Exception as exc:  # noqa: BLE001 - report and try again on the next round
                    self.say(f"graphrun: redis {name} could not restart: {exc}")

    # --- agents ------------------------------------------------------------------------

    def _spawn(self, replica: _Replica) -> None:
        args = [*AGENT_COMMAND, "agent", self.graph.file, replica.node.name,
                "--replica", str(replica.index), "--log-level", self.log_level, "--log-format", self.log_format]
        if replica.metrics_port is not None:
            args += ["--metrics-port", str(replica.metrics_port), "--metrics-host", self.metrics_host]
        env = self._environment(replica)
        # Own session, for an orderly stop on Ctrl-C; killed when the launcher dies, since no one
        # would stop it after that. SIGKILL, not SIGTERM: a graceful stop has no bound without a
        # launcher to enforce one, and at-least-once delivery hands what it held to the next run.
        replica.process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                                           start_new_session=True, preexec_fn=dies_with_owner(signal.SIGKILL))
        replica.started = time.monotonic()
        reader = threading.Thread(target=self._pump, args=(replica, replica.process.stdout), daemon=True)
        reader.start()
        replica.readers.append(reader)

    def _pump(self, replica: _Replica, stream: IO[bytes] | None) -> None:
        """Print a replica's output under its name; note when it reports that it started."""
        if stream is None:
            return
        started = f"agent {replica.node.name} {STARTED_LINE}"
        for raw in iter(stream.readline, b""):
            line = raw.decode(errors="replace").rstrip()
            if not replica.came_up and started in line:
                replica.came_up = True
            self.say(f"{replica.label} | {line}")
            if replica.log_file is not None:
                replica.log_file.write(line)
        stream.close()

    def _open_logs(self) -> None:
        """Say where each replica's metrics are served, and open its log file."""
        for replica in self.replicas:
            name = replica.label.strip()
            if replica.metrics_port is not None:
                self.say(f"graphrun: metrics of {name}: http://{self.metrics_host}:{replica.metrics_port}/metrics")
            if self.log_dir is not None:
                replica.log_file = AgentLogFile(self.log_dir / f"{name}.log")
        if self.log_dir is not None:
            self.say(f"graphrun: agents' output also in {self.log_dir}/AGENT.log")

    def _supervise(self, replica: _Replica) -> None:
        proc = replica.process
        if proc is None or replica.done:
            if not replica.done and replica.restart.ready() and not self._stop.is_set():
                self._spawn(replica)
            return
        code = proc.poll()
        if code is None:
            if not replica.came_up and time.monotonic() - replica.started > STABLE_AFTER:
                replica.came_up = True  # running stably, whether or not it said so
            return
        for reader in replica.readers:
            reader.join(timeout=1)
        replica.readers.clear()
        replica.process = None
        if code == 0:
            replica.done = replica.came_up = True
            self.say(f"graphrun: {replica.label.strip()} finished")
        elif code == EXIT_CONFIG:
            replica.done = replica.failed_to_start = True
            self.say(f"graphrun: {replica.label.strip()} could not start (see its messages above); not restarting it")
        else:
            replica.crashes += 1
            replica.last_code = code
            if time.monotonic() - replica.started > STABLE_AFTER:
                replica.came_up = True
                replica.restart.reset()  # a stable run ends a run of crashes
            delay = replica.restart.next()
            self.say(f"graphrun: {replica.label.strip()} crashed (exit code {code}); restarting in {delay:.1f} s")

    def run(self, duration: float | None = None) -> int:
        """Run until ``duration`` passes, a stop is requested, or every agent has finished."""
        if not self.replicas:
            self.say(f"graphrun: no agents to run{f' on node {self.node!r}' if self.node else ''}")
            return 1
        with signals.calling_on(lambda _signum: self._stop.set()):
            return self._run(duration)

    def _run(self, duration: float | None) -> int:
        try:
            if self.secure:
                self._make_users()
            self._start_redis()
            self._open_logs()
            self._began = time.time()
            for replica in self.replicas:
                self._spawn(replica)
            deadline = None if duration is None else time.monotonic() + duration
            while not self._stop.wait(0.1):
                if deadline is not None and time.monotonic() >= deadline:
                    break
                self._watch_redis()
                for replica in self.replicas:
                    self._supervise(replica)
                if all(r.done for r in self.replicas):
                    break
                if any(r.failed_to_start for r in self.replicas):
                    break
        finally:
            self._shutdown()
        failed = [r.label.strip() for r in self.replicas if r.failed_to_start]
        if failed:
            self.say(f"graphrun: could not start: {', '.join(failed)}")
        down = self._never_came_up()
        if down:
            self.say(f"graphrun: never came up: {'; '.join(down)}")
        return 1 if failed or down else 0

    def _never_came_up(self) -> list[str]:
        """The agents none of whose replicas ever came up, though they were started and crashed.

        A crash loop is restarted for as long as the run lasts, as it should be (the cause may
        go away); but a run in which some agent never once worked did not do its job, and
        must not end as a success that a script or a deployment check would believe.
        An agent that was only slow to start (waiting for Redis, say) and never crashed is
        not counted: nothing says it was failing.
        """
        down = []
        for agent in dict.fromkeys(r.node.name for r in self.replicas):
            replicas = [r for r in self.replicas if r.node.name == agent]
            if any(r.came_up or r.failed_to_start or not r.crashes for r in replicas):
                continue
            crashes = sum(r.crashes for r in replicas)
            codes = ", ".join(sorted({str(r.last_code) for r in replicas}))
            times = "time" if crashes == 1 else "times"
            down.append(f"{agent} (crashed {crashes} {times}, last exit code {codes}; see its messages above)")
        return down

    def _tally_line(self) -> str:
        """The run in one line, from the agents' last health records (see tally.py)."""
        clients = {}
        try:
            for name, url in self.urls.items():
                client = connect(url, socket_timeout=2.0, name="graphrun-launcher")
                if self.secure:
                    observer = acl.user_name(self.graph, acl.OBSERVER)
                    client.connection_pool.connection_kwargs.update(username=observer,
                                                                    password=self.passwords[observer])
                clients[name] = client
            began = self._began or time.time()
            agents = dict.fromkeys(r.node.name for r in self.replicas)
            return tally(self.graph, agents, clients, since=began, seconds=time.time() - began,
                         restarts=sum(r.crashes for r in self.replicas)).line()
        finally:
            for client in clients.values():
                client.connection_pool.disconnect()

    def _shutdown(self) -> None:
        running = [r for r in self.replicas if r.process and r.process.poll() is None]
        for r in running:
            r.process.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
        end = time.monotonic() + STOP_GRACE
        for r in running:
            try:
                r.process.wait(max(0.1, end - time.monotonic()))  # type: ignore[union-attr]
            except subprocess.TimeoutExpired:
                self.say(f"graphrun: {r.label.strip()} did not stop within {STOP_GRACE:.0f} s; killing it")
                r.process.kill()  # type: ignore[union-attr]
                r.process.wait()  # type: ignore[union-attr]
            for reader in r.readers:
                reader.join(timeout=1)
        for r in self.replicas:
            if r.log_file is not None:
                r.log_file.close()
        if self._began is not None:
            try:
                self.say(f"graphrun: {self._tally_line()}")
            except Exception as exc:  # the summary is a courtesy: the servers must still stop
                self.say(f"graphrun: the run's counts could not be read: {exc!r}")
        for server in self.servers.values():
            server.close()
        if self.servers:
            (self.state / "redis.json").unlink(missing_ok=True)
        self._unlock_state()
