"""`graphrun run --secure`, and secrets kept off agents' command lines.

Real processes throughout: the launcher, its redis-servers with the graph's ACL users,
one OS process per agent; what `ps` shows is read from /proc with psutil.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from io import StringIO
from pathlib import Path

import psutil
import pytest
import redis
import yaml
from conftest import wait_until

from graphrun import acl
from graphrun.graph import load_graph
from graphrun.launcher import Launcher
from graphrun.redis_server import RedisServer, free_port

REPO = Path(__file__).resolve().parents[1]
HELLO = """\
name: hello
redis:
  main: {}
  plant: {url: "redis://:${PLANT_PASSWORD}@127.0.0.1:PORT/0"}
agents:
  counter:
    type: examples.counter
    params: {rate: 20}
    outputs: {numbers: plant:hello.numbers}
  doubler:
    type: examples.doubler
    inputs: {numbers: counter.numbers}
  printer:
    type: examples.printer
    inputs: {values: doubler.doubled}
"""


def agent_processes() -> list[psutil.Process]:
    found = []
    for child in psutil.Process().children(recursive=True):
        try:
            if "agent" in child.cmdline():
                found.append(child)
        except psutil.NoSuchProcess:
            continue
    return found


@pytest.fixture
def plant() -> Iterator[RedisServer]:
    """A Redis elsewhere, with a password of its own (the default user's)."""
    with RedisServer(name="plant") as server:
        redis.Redis(port=server.port).config_set("requirepass", "plant-secret-1")
        server.login = ("default", "plant-secret-1")
        yield server


def run_in_thread(launcher: Launcher) -> threading.Thread:
    thread = threading.Thread(target=launcher.run, kwargs={"duration": 120}, daemon=True)
    thread.start()
    return thread


def test_no_agent_process_has_a_redis_password_on_its_command_line(
        tmp_path: Path, plant: RedisServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """The defect: `graphrun run` passed `--redis NAME=redis://:PASSWORD@...` to every agent
    process, and `ps` shows command lines to every local user."""
    monkeypatch.setenv("PLANT_PASSWORD", "plant-secret-1")
    path = tmp_path / "hello.yaml"
    path.write_text(HELLO.replace("PORT", str(plant.port)))
    plant_url = f"redis://:plant-secret-1@127.0.0.1:{plant.port}/0"
    launcher = Launcher(load_graph(path), state=tmp_path / "state", out=StringIO(), redis_urls={"plant": plant_url})
    thread = run_in_thread(launcher)
    try:
        plant_client = redis.Redis(port=plant.port, password="plant-secret-1")
        wait_until(lambda: len(agent_processes()) == 3 and plant_client.xlen("hello.numbers") > 0,
                   what="the agents, counting on the plant's Redis")
        for process in agent_processes():
            assert "plant-secret-1" not in " ".join(process.cmdline()), process.cmdline()
            assert json.loads(process.environ()["GRAPHRUN_AGENT_REDIS_URLS"])["plant"] == plant_url
    finally:
        launcher.request_stop()
        thread.join(60)


def test_under_secure_each_agent_process_holds_only_its_own_password_and_none_on_its_command_line(
        tmp_path: Path, plant: RedisServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PLANT_PASSWORD", "plant-secret-1")
    monkeypatch.setenv("GRAPHRUN_REDIS_PASSWORD_DOUBLER", "doubler-secret-2")  # given, as for a Redis elsewhere
    path = tmp_path / "hello.yaml"
    path.write_text(HELLO.replace("PORT", str(plant.port)))
    graph = load_graph(path)
    launcher = Launcher(graph, state=tmp_path / "state", secure=True, out=StringIO())
    thread = run_in_thread(launcher)
    try:
        plant_client = redis.Redis(port=plant.port, password="plant-secret-1")
        wait_until(lambda: len(agent_processes()) == 3 and plant_client.xlen("hello.numbers") > 0,
                   what="the agents, counting on the plant's Redis")
        main = redis.Redis(unix_socket_path=launcher.servers["main"].unix_socket,
                           username="hello-observer", password=launcher.passwords["hello-observer"])
        wait_until(lambda: main.xlen("hello.doubler.doubled") > 0, what="doubled numbers on the secured Redis")
        assert launcher.passwords["hello-doubler"] == "doubler-secret-2"
        secrets = ["plant-secret-1", *launcher.passwords.values()]
        for process in agent_processes():
            command_line = " ".join(process.cmdline())
            assert not [s for s in secrets if s in command_line], f"a secret on the command line: {command_line}"
            environ = process.environ()
            agent = process.cmdline()[process.cmdline().index("agent") + 2]
            own = acl.user_name(graph, agent)
            assert environ["GRAPHRUN_REDIS_USER"] == own
            assert environ["GRAPHRUN_REDIS_PASSWORD"] == launcher.passwords[own]
            others = [pw for user, pw in launcher.passwords.items() if user != own]
            assert not [pw for pw in others if pw in json.dumps(environ)], f"{agent} was given another's password"
            assert "GRAPHRUN_REDIS_PASSWORD_DOUBLER" not in environ  # the launcher's secrets stay with it
    finally:
        launcher.request_stop()
        thread.join(60)


def test_a_secured_redis_refuses_the_default_user_and_each_agent_s_user_outside_its_ports(tmp_path: Path) -> None:
    path = tmp_path / "hello.yaml"
    path.write_text((REPO / "graphs" / "hello.yaml").read_text())
    graph = load_graph(path)
    launcher = Launcher(graph, state=tmp_path / "state", secure=True, out=StringIO())
    thread = run_in_thread(launcher)
    try:
        wait_until(lambda: "main" in launcher.servers and len(agent_processes()) == 4, what="the graph running")
        server = launcher.servers["main"]
        with pytest.raises(redis.exceptions.AuthenticationError):
            redis.Redis(unix_socket_path=server.unix_socket).ping()
        printer = redis.Redis(unix_socket_path=server.unix_socket, username="hello-printer",
                              password=launcher.passwords["hello-printer"])
        assert printer.ping()
        with pytest.raises(redis.exceptions.NoPermissionError):
            printer.xadd("hello.numbers", {"value": 1})
        observer_file = tmp_path / "state" / "secrets" / "observer"
        assert observer_file.read_text().strip() == launcher.passwords["hello-observer"]
        assert oct(observer_file.stat().st_mode & 0o777) == "0o600"
        assert "#" in (tmp_path / "state" / "acl" / "main.acl").read_text()
        assert launcher.passwords["hello-printer"] not in (tmp_path / "state" / "acl" / "main.acl").read_text()
        # The tools that look at a running graph work as the observer, and only look.
        env = {**os.environ, "GRAPHRUN_REDIS_USER": "hello-observer", "GRAPHRUN_REDIS_PASSWORD_FILE": str(observer_file),
               "GRAPHRUN_REDIS_MAIN": server.unix_url}

        def tool(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run([sys.executable, "-m", "graphrun", *args], env=env, capture_output=True, text=True,
                                  timeout=120)

        wait_until(lambda: "running" in tool("status", str(path)).stdout, what="graphrun status as the observer")
        echoed = tool("echo", str(path), "doubler.doubled", "--count", "2")
        assert echoed.returncode == 0 and '"value"' in echoed.stdout, echoed.stderr
        recorded = tool("record", str(path), "-o", str(tmp_path / "r.mcap"), "--duration", "1")
        assert recorded.returncode == 0 and (tmp_path / "r.mcap").stat().st_size > 0, recorded.stderr
    finally:
        launcher.request_stop()
        thread.join(60)


def test_the_finger_follower_line_runs_under_secure_and_its_parts_reach_the_plc(tmp_path: Path) -> None:
    text = yaml.safe_load((REPO / "graphs" / "finger_follower.yaml").read_text())
    plc_port, hmi_port = free_port(), free_port()
    for name, agent in text["agents"].items():
        if agent["type"] == "camera":
            agent["params"].update(width=128, height=102)
        if agent["type"] == "hmi":
            agent["params"]["port"] = hmi_port
        if agent["type"] == "modbus.plc_sim":
            agent["params"]["port"] = plc_port
    path = tmp_path / "finger_follower.yaml"
    path.write_text(yaml.safe_dump(text, sort_keys=False))
    state = tmp_path / "state"
    env = {**os.environ, "PLC_PORT": str(plc_port), "PYTHONUNBUFFERED": "1"}
    log = (tmp_path / "run.log").open("w+")
    run = subprocess.Popen([sys.executable, "-m", "graphrun", "run", str(path), "--secure", "--state-dir", str(state)],
                           stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        wait_until(lambda: (state / "redis.json").exists() and (state / "secrets" / "observer").exists(),
                   timeout=60, what="the secured Redis servers")
        urls = json.loads((state / "redis.json").read_text())
        login = {"username": "finger_follower-observer",
                 "password": (state / "secrets" / "observer").read_text().strip()}
        inference = redis.Redis.from_url(urls["inference"], **login)

        def reported(agent: str, field: str) -> int:
            raw = inference.hgetall(f"graphrun:health:finger_follower:{agent}")
            return max((int(json.loads(r).get(field, 0)) for r in raw.values()), default=0)

        # The PLC agent wrote parts' results, and the PLC (simulated) took them.
        wait_until(lambda: reported("plc", "written") >= 5 and reported("plc_sim", "results") >= 5, timeout=240,
                   what="five parts' results written to the PLC")
        assert inference.xlen("plc.results") >= 5  # the observer reads what was written, too

        def hmi_health() -> dict:
            with urllib.request.urlopen(f"http://127.0.0.1:{hmi_port}/api/state", timeout=10) as reply:
                return json.loads(reply.read())["health"] or {}

        # The HMI's own user reads every agent's heartbeat, on every instance, as status does.
        wait_until(lambda: {a["name"]: a["state"] for a in hmi_health().get("agents", [])}.get("plc") == "running",
                   timeout=60, what="the HMI showing the graph's health")
        health = hmi_health()
        assert not health["stale"] and not health.get("error") and not health["unreachable"], health
        assert {s["stream"] for s in health["streams"]} >= {"cam-front:cam.front.frames", "inference:plc.results"}
        log.seek(0)
        output = log.read()
        assert "NOPERM" not in output and "no permissions" not in output, output[-3000:]
    finally:
        run.send_signal(signal.SIGINT)
        try:
            run.wait(60)
        except subprocess.TimeoutExpired:
            run.kill()
            run.wait()
        log.close()
