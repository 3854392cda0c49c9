"""A Redis master with replicas and three sentinels, as processes on this machine.

For the failover tests and benchmark, and to try a graph's ``sentinel:`` out locally:

    with Replicated(folder) as servers:
        servers.settled_within(60)
        ...  # redis: {main: {sentinel: {master: line, addresses: <servers.addresses>}}}
        servers.kill(servers.master_port())  # a crash; the sentinels promote a replica

The sentinels' timeouts are down to a second, so a failover takes a few seconds rather
than the default half minute; a plant sets its own (``down-after-milliseconds``).
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import redis

from .errors import RedisUnavailable
from .redis_server import find_redis_server, free_port

MASTER = "line"
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 3000


class Replicated:
    """A master, its replicas and three sentinels watching them (quorum 2), each a redis-server."""

    def __init__(self, folder: Path, *, replicas: int = 2, master: str = MASTER):
        self.folder = folder
        self.name = master
        self.processes: dict[int, subprocess.Popen[bytes]] = {}
        self.master = self.server(free_port())
        self.replicas = [self.server(free_port(), replica_of=self.master) for _ in range(replicas)]
        self.sentinels = [self._sentinel(free_port()) for _ in range(3)]

    def server(self, port: int, *, replica_of: int | None = None) -> int:
        """Start a data server (memory only) on ``port``, a replica of ``replica_of`` if given."""
        # A replica's first sync starts at once (Redis waits 5 s by default for more replicas).
        args = ["--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                "--dbfilename", f"dump-{port}.rdb", "--repl-diskless-sync-delay", "0"]
        if replica_of is not None:
            args += ["--replicaof", "127.0.0.1", str(replica_of)]
        return self._start(port, args)

    def _sentinel(self, port: int) -> int:
        config = self.folder / f"sentinel-{port}.conf"  # a sentinel rewrites its file: one each
        config.write_text(f"port {port}\nbind 127.0.0.1\ndir {self.folder}\n"
                          f"sentinel monitor {self.name} 127.0.0.1 {self.master} 2\n"
                          f"sentinel down-after-milliseconds {self.name} {DOWN_AFTER_MS}\n"
                          f"sentinel failover-timeout {self.name} {FAILOVER_TIMEOUT_MS}\n")
        return self._start(port, [str(config), "--sentinel"])

    def _start(self, port: int, args: list[str]) -> int:
        process = subprocess.Popen([find_redis_server(), *args], stdout=subprocess.DEVNULL,
                                   stderr=subprocess.PIPE, cwd=self.folder)
        self.processes[port] = process
        deadline = time.monotonic() + 30
        while not _answers(port):
            if process.poll() is not None:
                raise RedisUnavailable(f"redis-server on port {port} exited at start: "
                                       f"{process.stderr.read().decode(errors='replace') if process.stderr else ''}")
            if time.monotonic() > deadline:
                raise RedisUnavailable(f"redis-server on port {port} did not answer within 30 s")
            time.sleep(0.02)
        return port

    @property
    def addresses(self) -> list[str]:
        """The sentinels, as a graph's ``sentinel.addresses`` lists them."""
        return [f"127.0.0.1:{port}" for port in self.sentinels]

    def settled(self) -> bool:
        """Every replica is in sync with the master, and every sentinel sees every replica and
        the two other sentinels: a failover can be agreed, and loses only what is in flight.
        (A replica still in its first sync would take over empty.)"""
        for port in self.replicas:
            if redis.Redis(port=port, decode_responses=True).info("replication").get("master_link_status") != "up":
                return False
        for port in self.sentinels:
            sentinel = redis.Redis(port=port, decode_responses=True)
            if (len(sentinel.sentinel_slaves(self.name)) < len(self.replicas)
                    or len(sentinel.sentinel_sentinels(self.name)) < 2):
                return False
        return True

    def settled_within(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self.settled():
            if time.monotonic() > deadline:
                raise RedisUnavailable(f"the sentinels did not find the replicas and each other within {seconds:.0f} s")
            time.sleep(0.1)

    def master_port(self) -> int:
        """Where the sentinels say the master is now."""
        return int(redis.Redis(port=self.sentinels[0]).sentinel_get_master_addr_by_name(self.name)[1])

    def kill(self, port: int) -> None:
        """SIGKILL, as a crash would."""
        process = self.processes[port]
        process.kill()
        process.wait()

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.kill()
                process.wait()
            if process.stderr:
                process.stderr.close()

    def __enter__(self) -> Replicated:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _answers(port: int) -> bool:
    try:
        return bool(redis.Redis(port=port, socket_timeout=1, socket_connect_timeout=1).ping())
    except redis.RedisError:
        return False
