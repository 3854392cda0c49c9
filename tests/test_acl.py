"""Redis ACL users from the graph, applied to a real redis-server: each agent's user runs
the agent and can touch nothing else; the observer can only read."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from conftest import wait_until, write_messages

from graphrun import KeyGrant, RedisAccess, acl
from graphrun.graph import Graph
from graphrun.redis_server import RedisServer
from graphrun.runner import AgentRunner

LINE = """\
name: line
agents:
  counter:
    type: examples.counter
    params: {rate: 50}
  doubler:
    type: examples.doubler
    inputs: {numbers: counter.numbers}
  printer:
    type: examples.printer
    inputs: {values: doubler.doubled}
"""
PASSWORDS = {"counter": "pw-counter", "doubler": "pw-doubler", "printer": "pw-printer", "observer": "pw-observer"}
NOPERM = "no permissions"


def apply_acl(client: redis.Redis, graph: Graph, instance: str = "main") -> None:
    users = acl.users(graph)
    for command in acl.commands(users, instance, {u.name: PASSWORDS[u.role] for u in users}):
        client.execute_command(*command)


def login(server: RedisServer, graph: Graph, role: str) -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=server.port, username=acl.user_name(graph, role),
                       password=PASSWORDS[role], socket_timeout=10)


def url(server: RedisServer, graph: Graph, role: str) -> str:
    return f"redis://{acl.user_name(graph, role)}:{PASSWORDS[role]}@127.0.0.1:{server.port}/0"


@pytest.fixture
def secured(redis_server: RedisServer, redis_client: redis.Redis,
            graph_file: Callable[[str], Graph]) -> Iterator[tuple[RedisServer, Graph]]:
    graph = graph_file(LINE)
    apply_acl(redis_client, graph)
    yield redis_server, graph


def run_agents(server: RedisServer, graph: Graph, names: list[str]) -> list[tuple[AgentRunner, threading.Thread]]:
    started = []
    for name in names:
        runner = AgentRunner(graph, name, replica=0, redis_urls={"main": url(server, graph, name)})
        thread = threading.Thread(target=runner.run, daemon=True)
        thread.start()
        started.append((runner, thread))
    return started


def stop(started: list[tuple[AgentRunner, threading.Thread]]) -> None:
    for runner, _ in started:
        runner.request_stop()
    for _, thread in started:
        thread.join(15)


def test_each_agent_runs_under_its_own_user_streams_health_and_dead_letters_included(
        secured: tuple[RedisServer, Graph], redis_client: redis.Redis) -> None:
    server, graph = secured
    started = run_agents(server, graph, ["counter", "doubler", "printer"])
    try:
        wait_until(lambda: redis_client.xlen("line.doubler.doubled") >= 20, what="doubled numbers")
        redis_client.xadd("line.counter.numbers", {"not": "a message"})  # a malformed entry: dead-lettered
        wait_until(lambda: redis_client.exists("line.counter.numbers:dead"), what="the dead letter")
        for name in ("counter", "doubler", "printer"):
            wait_until(lambda: redis_client.hlen(f"graphrun:health:line:{name}") == 1, what=f"{name}'s health")
        assert all(r.agent is not None and not r.counters.redis_errors for r, _ in started)
    finally:
        stop(started)


def test_an_agent_cannot_read_or_write_a_stream_outside_its_ports_nor_administer_redis(
        secured: tuple[RedisServer, Graph], redis_client: redis.Redis) -> None:
    server, graph = secured
    write_messages(redis_client, "line.counter.numbers", [{"value": 1}])
    redis_client.xadd("line.elsewhere", {"x": 1})
    redis_client.set("graphrun:part_id:line:counter", 7)
    doubler = login(server, graph, "doubler")
    doubler.xgroup_create("line.counter.numbers", "doubler", "0")
    assert doubler.xreadgroup("doubler", "d-0", {"line.counter.numbers": ">"})  # its input: allowed
    doubler.xadd("line.doubler.doubled", {"x": 1})  # its output: allowed
    refused: dict[str, Callable[[], object]] = {
        "write its input": lambda: doubler.xadd("line.counter.numbers", {"x": 1}),
        "read its output through a group": lambda: doubler.xreadgroup("g", "c", {"line.doubler.doubled": ">"}),
        "read its input without a group": lambda: doubler.xrange("line.counter.numbers"),
        "read another stream": lambda: doubler.xreadgroup("doubler", "d-0", {"line.elsewhere": ">"}),
        "write another stream": lambda: doubler.xadd("line.elsewhere", {"x": 1}),
        "delete its output": lambda: doubler.delete("line.doubler.doubled"),
        "write another agent's health": lambda: doubler.hset("graphrun:health:line:counter", "x", "1"),
        "read another agent's key": lambda: doubler.get("graphrun:part_id:line:counter"),
        "FLUSHALL": lambda: doubler.flushall(),
        "CONFIG": lambda: doubler.config_get("*"),
        "KEYS": lambda: doubler.keys("*"),
        "SCAN": lambda: doubler.scan(),
        "ACL": lambda: doubler.acl_list(),
        "SHUTDOWN": lambda: doubler.execute_command("SHUTDOWN", "NOSAVE"),
    }
    for what, attempt in refused.items():
        with pytest.raises(redis.exceptions.NoPermissionError, match=NOPERM):
            attempt()
            pytest.fail(f"the doubler's user could {what}")
    assert redis_client.xlen("line.counter.numbers") == 1 and redis_client.ping()


def test_the_observer_reads_streams_health_and_the_index_but_writes_nothing(
        secured: tuple[RedisServer, Graph], redis_client: redis.Redis) -> None:
    server, graph = secured
    write_messages(redis_client, "line.counter.numbers", [{"value": 1}])
    redis_client.hset("graphrun:health:line:counter", "counter-0", "{}")
    observer = login(server, graph, "observer")
    assert len(observer.xrange("line.counter.numbers")) == 1
    assert observer.hgetall("graphrun:health:line:counter") == {b"counter-0": b"{}"}
    assert observer.lrange("graphrun:index:line:part_id:1", 0, -1) == []
    refused: dict[str, Callable[[], object]] = {
        "write a stream": lambda: observer.xadd("line.counter.numbers", {"x": 1}),
        "create a group": lambda: observer.xgroup_create("line.counter.numbers", "spy", "0"),
        "trim a stream": lambda: observer.xtrim("line.counter.numbers", 0),
        "write health": lambda: observer.hset("graphrun:health:line:counter", "x", "1"),
        "delete": lambda: observer.delete("line.counter.numbers"),
        "read a key outside the graph": lambda: observer.get("other"),
        "FLUSHALL": lambda: observer.flushall(),
        "CONFIG": lambda: observer.config_get("*"),
        "KEYS": lambda: observer.keys("*"),
    }
    for what, attempt in refused.items():
        with pytest.raises(redis.exceptions.NoPermissionError, match=NOPERM):
            attempt()
            pytest.fail(f"the observer could {what}")


def test_what_an_agent_class_declares_is_granted_on_exactly_its_keys(
        redis_server: RedisServer, redis_client: redis.Redis, graph_file: Callable[[str], Graph]) -> None:
    graph = graph_file("name: line\nagents:\n  counter: {type: trigger, params: {rate: 5}}\n"
                       "  doubler: {type: camera, params: {source: synthetic, trigger: software},"
                       " inputs: {trigger: counter.parts}}\n")
    apply_acl(redis_client, graph)
    trigger = login(redis_server, graph, "counter")
    trigger.set("graphrun:part_id:line:counter", 3)  # declared by the trigger agent: its next part id
    for key in ("graphrun:part_id:line:doubler", "graphrun:part_id:other:counter"):
        with pytest.raises(redis.exceptions.NoPermissionError):
            trigger.set(key, 3)
    with pytest.raises(redis.exceptions.NoPermissionError):  # a declared key takes only its declared commands
        trigger.delete("graphrun:part_id:line:counter")


def test_an_agent_showing_the_graph_s_health_reads_every_agent_s_record(
        redis_server: RedisServer, redis_client: redis.Redis, graph_file: Callable[[str], Graph]) -> None:
    graph = graph_file(LINE + "  hmi:\n    type: hmi\n    params: {port: 0}\n    inputs:\n"
                              "      verdicts: {}\n      frames: {}\n")
    grants = acl.declared_access(graph, graph.agents["hmi"])
    assert grants == RedisAccess(observe=True)
    PASSWORDS["hmi"] = "pw-hmi"
    apply_acl(redis_client, graph)
    redis_client.hset("graphrun:health:line:counter", "counter-0", "{}")
    write_messages(redis_client, "line.counter.numbers", [{"value": 1}])
    hmi = login(redis_server, graph, "hmi")
    assert hmi.hgetall("graphrun:health:line:counter") == {b"counter-0": b"{}"}
    assert hmi.xinfo_stream("line.counter.numbers")["length"] == 1  # a stream it does not read: its backlog
    with pytest.raises(redis.exceptions.NoPermissionError):
        hmi.hset("graphrun:health:line:counter", "x", "1")


def test_a_declared_grant_on_an_instance_the_graph_lacks_is_refused_naming_the_agent(
        graph_file: Callable[[str], Graph], monkeypatch: pytest.MonkeyPatch) -> None:
    graph = graph_file(LINE)
    cls = graph.agents["counter"].agent_class
    monkeypatch.setattr(cls, "redis_access", classmethod(
        lambda c, params, **_: RedisAccess(grants=(KeyGrant("models", ("get",), ("k",)),))))
    with pytest.raises(Exception, match="agent 'counter' asks for access to Redis instance 'models'"):
        acl.users(graph)


def test_the_acl_file_turns_the_default_user_off_and_loads_into_redis_server(
        tmp_path: Path, graph_file: Callable[[str], Graph]) -> None:
    graph = graph_file(LINE)
    env = {f"GRAPHRUN_REDIS_PASSWORD_{role.upper()}": pw for role, pw in PASSWORDS.items()}
    printed = subprocess.run([sys.executable, "-m", "graphrun", "acl", graph.file, "--format", "aclfile"],
                             capture_output=True, text=True, env={**env, "PATH": "/usr/bin:/bin"}, check=True)
    assert "pw-" not in printed.stdout  # only the passwords' hashes
    aclfile = tmp_path / "users.acl"
    aclfile.write_text(printed.stdout)
    server = RedisServer(name="acl")
    server_args = ["--aclfile", str(aclfile)]
    process = subprocess.Popen(["redis-server", "--port", str(server.port), "--bind", "127.0.0.1",
                                "--save", "", "--appendonly", "no", *server_args],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        anonymous = redis.Redis(host="127.0.0.1", port=server.port)
        wait_until(lambda: _answers(anonymous), what="redis-server with the ACL file")
        with pytest.raises(redis.exceptions.AuthenticationError):
            anonymous.ping()
        assert login(server, graph, "doubler").ping()
        assert login(server, graph, "observer").ping()
    finally:
        process.terminate()
        process.wait(10)
        server.close()


def test_a_user_whose_secret_is_not_set_is_written_off_and_named_on_stderr(graph_file: Callable[[str], Graph]) -> None:
    graph = graph_file(LINE)
    printed = subprocess.run([sys.executable, "-m", "graphrun", "acl", graph.file, "--format", "commands"],
                             capture_output=True, text=True, env={"PATH": "/usr/bin:/bin",
                                                                  "GRAPHRUN_REDIS_PASSWORD_DOUBLER": "pw"})
    assert printed.returncode == 0, printed.stderr
    lines = {line.split()[2]: line for line in printed.stdout.splitlines()}
    assert " on #" in lines["line-doubler"] and " off " in lines["line-counter"]
    assert "no password for user line-counter" in printed.stderr
    assert "GRAPHRUN_REDIS_PASSWORD_COUNTER_FILE" in printed.stderr


def _answers(client: redis.Redis) -> bool:
    try:
        client.ping()
    except redis.exceptions.AuthenticationError:
        return True
    except redis.exceptions.ConnectionError:
        return False
    return True
