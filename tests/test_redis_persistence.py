"""`persistence: aof|rdb|none` of a graph's Redis instance, as `graphrun run` and
`graphrun compose` apply it, checked on real redis-server processes: their configuration,
and what survives a crash (SIGKILL) on each setting.
"""

from __future__ import annotations

import io
import json
import subprocess
import threading
from pathlib import Path

import pytest
import redis
from conftest import wait_until
from test_compose import compose

from graphrun.graph import load_graph
from graphrun.launcher import Launcher
from graphrun.redis_server import RDB_SAVE, RedisServer, find_redis_server, free_port

# What CONFIG GET answers for each setting: (appendonly, save).
EXPECTED = {"aof": ("yes", ""), "rdb": ("no", RDB_SAVE), "none": ("no", "")}


def settings(client: redis.Redis) -> tuple[str, str]:
    config = client.config_get("appendonly") | client.config_get("save")
    return config["appendonly"], config["save"]


@pytest.mark.parametrize("persistence", sorted(EXPECTED))
def test_a_server_graphrun_starts_is_configured_as_declared(persistence: str) -> None:
    with RedisServer(name="p", persistence=persistence) as server:  # type: ignore[arg-type]
        client = redis.Redis.from_url(server.url, decode_responses=True)
        assert settings(client) == EXPECTED[persistence]
        if persistence == "aof":
            assert client.config_get("appendfsync")["appendfsync"] == "everysec"


@pytest.mark.parametrize(("persistence", "survivors"), [("aof", ["1", "2"]), ("rdb", ["1"]), ("none", [])])
def test_a_crash_loses_what_the_setting_says(persistence: str, survivors: list[str]) -> None:
    """aof keeps every acknowledged write, rdb what the last snapshot holds, none nothing."""
    with RedisServer(name="p", persistence=persistence) as server:  # type: ignore[arg-type]
        client = redis.Redis.from_url(server.url, decode_responses=True)
        client.xadd("s", {"n": "1"})
        if persistence == "rdb":  # stands in for a scheduled snapshot: entry 1 is in it, 2 is not
            client.bgsave()
            wait_until(lambda: client.info("persistence")["rdb_bgsave_in_progress"] == 0
                       and client.info("persistence")["rdb_last_bgsave_status"] == "ok", what="the snapshot")
        client.xadd("s", {"n": "2"})
        server.kill()
        server.start()
        client = redis.Redis.from_url(server.url, decode_responses=True)
        assert [fields["n"] for _, fields in client.xrange("s")] == survivors


def test_graphrun_run_starts_each_instance_with_its_persistence(tmp_path: Path) -> None:
    path = tmp_path / "graph.yaml"
    path.write_text("""\
name: persisted
redis:
  frames: {persistence: none}
  verdicts: {persistence: aof}
  state: {persistence: rdb}
agents:
  counter: {type: examples.counter, params: {rate: 20}, outputs: {numbers: frames:numbers}}
  doubler: {type: examples.doubler, inputs: {numbers: counter.numbers}, outputs: {doubled: verdicts:doubled}}
  tripler:
    type: examples.doubler
    params: {factor: 3}
    inputs: {numbers: counter.numbers}
    outputs: {doubled: state:tripled}
""")
    launcher = Launcher(load_graph(path), state=tmp_path / "state", out=io.StringIO())
    thread = threading.Thread(target=launcher.run, kwargs={"duration": 60}, daemon=True)
    thread.start()
    try:
        urls_file = tmp_path / "state" / "redis.json"
        wait_until(urls_file.exists, what="the launcher's Redis servers")
        urls = json.loads(urls_file.read_text())
        clients = {name: redis.Redis.from_url(url, decode_responses=True) for name, url in urls.items()}
        assert {name: settings(c) for name, c in clients.items()} == {
            "frames": EXPECTED["none"], "verdicts": EXPECTED["aof"], "state": EXPECTED["rdb"]}
        wait_until(lambda: clients["verdicts"].xlen("doubled") > 0, what="the agents to run on those servers")
    finally:
        launcher.request_stop()
        thread.join(30)
    assert not thread.is_alive()


@pytest.mark.parametrize("persistence", sorted(EXPECTED))
def test_graphrun_compose_gives_the_redis_container_the_same_settings(tmp_path: Path, persistence: str) -> None:
    gen = compose(tmp_path, f"""\
name: persisted
redis: {{main: {{persistence: {persistence}, maxmemory: 64mb}}}}
agents:
  counter: {{type: examples.counter}}
""")
    command = gen.service("local", "redis-main")["command"]
    assert command[-2:] == ["--aclfile", "/etc/redis/acl/main.acl"]  # the users: a volume of the compose file
    command = command[:-2]
    assert command[0] == "redis-server" and command[-2:] == ["--maxmemory", "64mb"]
    # The container's command, run here on a free port, configures Redis as `graphrun run` does.
    port = free_port()
    process = subprocess.Popen([find_redis_server(), *command[1:], "--port", str(port), "--bind", "127.0.0.1",
                                "--dir", str(tmp_path)], stdout=subprocess.DEVNULL)
    try:
        client = redis.Redis(port=port, decode_responses=True)

        def answers() -> bool:
            try:
                return bool(client.ping())
            except redis.ConnectionError:
                return False

        wait_until(answers, what="the container's redis-server")
        assert settings(client) == EXPECTED[persistence]
    finally:
        process.terminate()
        process.wait(10)

