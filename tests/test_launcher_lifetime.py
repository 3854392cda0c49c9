"""`graphrun run` owns what it starts: its processes die with it, its state folder is its alone,
its agents are the installed graphrun whatever the working folder holds, and a run whose
agents never came up does not pass for a success."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import psutil

from conftest import wait_until
from test_launcher import ROOT, Graphrun, graphrun

HELLO = ROOT / "graphs" / "hello.yaml"


def hello_running(tmp_path: Path) -> Graphrun:
    """``graphrun run graphs/hello.yaml`` in the background, once its four agents have started."""
    run = Graphrun("run", str(HELLO), "--state-dir", str(tmp_path / "state"), cwd=tmp_path)
    run.wait_for(lambda out: len(re.findall(r"agent \w+ started", out)) == 4, what="the hello graph's agents to start")
    return run


def test_killing_the_launcher_outright_takes_its_redis_and_agents_with_it(tmp_path: Path) -> None:
    run = hello_running(tmp_path)
    children = psutil.Process(run.process.pid).children(recursive=True)
    try:
        names = sorted(c.name() for c in children)
        assert names.count("redis-server") == 1 and len(children) == 5, names  # redis and four agent replicas

        run.process.send_signal(signal.SIGKILL)  # no chance to stop anything itself
        run.finish()

        wait_until(lambda: not any(alive(c) for c in children), timeout=30,
                   what="the launcher's children to die with it")
    finally:
        run.process.kill()
        for child in children:  # never leave orphans behind, even when an assertion fails
            try:
                child.kill()
            except psutil.NoSuchProcess:
                pass


def alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_a_second_run_on_a_state_folder_in_use_is_refused_and_says_which(tmp_path: Path) -> None:
    first = hello_running(tmp_path)
    try:
        second = graphrun("run", str(HELLO), "--state-dir", str(tmp_path / "state"), "--duration", "5", cwd=tmp_path)
        assert second.returncode == 1, second.stdout + second.stderr
        assert (f"graphrun: state folder {tmp_path / 'state'} is in use by another graphrun run "
                f"(pid {first.process.pid})") in second.stderr
        assert "redis main: started" not in second.stdout  # refused before anything started
        assert first.process.poll() is None  # the first run was not disturbed,
        assert (tmp_path / "state" / "redis.json").exists()  # nor its record of the servers it started
    finally:
        first.process.send_signal(signal.SIGTERM)
        first.finish()
    assert first.process.returncode == 0

    # Once the first run has ended, the folder is free again.
    again = graphrun("run", str(HELLO), "--state-dir", str(tmp_path / "state"), "--duration", "1", cwd=tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr


def test_a_state_folder_stays_taken_until_the_redis_server_using_it_has_exited(tmp_path: Path) -> None:
    first = hello_running(tmp_path)
    children = psutil.Process(first.process.pid).children(recursive=True)
    try:
        (redis_server,) = [c for c in children if c.name() == "redis-server"]
        redis_server.suspend()  # a server slow to write its data out after its launcher was killed
        first.process.send_signal(signal.SIGKILL)
        first.finish()

        second = graphrun("run", str(HELLO), "--state-dir", str(tmp_path / "state"), "--duration", "1", cwd=tmp_path)
        assert second.returncode == 1, second.stdout + second.stderr
        assert (f"graphrun: state folder {tmp_path / 'state'} is in use by the redis-server(s) of graphrun run "
                f"pid {first.process.pid}, which has ended; they stop with it: try again in a moment") in second.stderr

        redis_server.resume()  # it stops, as its launcher's death asked
        wait_until(lambda: not alive(redis_server), timeout=30, what="the redis-server to stop")
        third = graphrun("run", str(HELLO), "--state-dir", str(tmp_path / "state"), "--duration", "1", cwd=tmp_path)
        assert third.returncode == 0, third.stdout + third.stderr
    finally:
        first.process.kill()
        for child in children:
            try:
                child.kill()
            except psutil.NoSuchProcess:
                pass


BESIDE_AGENT = """\
from pathlib import Path
from typing import TypedDict

from pydantic import BaseModel

from graphrun import Agent, Output


class Tick(TypedDict):
    n: int


class Beside(Agent):
    ticks = Output(Tick)

    class Params(BaseModel):
        marker: str

    def start(self) -> None:
        Path(self.params.marker).write_text("started")

    def produce(self) -> None:
        self.wait(0.1)
"""

SHADOW = "the working folder's graphrun was imported, not the installed package"


def test_a_graphrun_folder_in_the_working_folder_does_not_shadow_the_package_in_agents(tmp_path: Path) -> None:
    plant = tmp_path / "plant"  # the graph, with a custom agent beside it
    plant.mkdir()
    (plant / "beside.py").write_text(BESIDE_AGENT)
    marker = tmp_path / "beside-started"
    (plant / "shadowed.yaml").write_text(f"""\
name: shadowed
redis: {{main: {{}}}}
agents:
  counter: {{type: examples.counter, params: {{rate: 20}}, outputs: {{numbers: main:numbers}}}}
  beside: {{type: "beside:Beside", params: {{marker: "{marker}"}}}}
""")
    work = tmp_path / "work"  # the working folder holds an unrelated folder named graphrun
    (work / "graphrun").mkdir(parents=True)
    (work / "graphrun" / "__init__.py").write_text(f"raise SystemExit({SHADOW!r})\n")

    command = Path(sys.executable).parent / "graphrun"  # as an operator types it: the installed script
    done = subprocess.run([str(command), "run", str(plant / "shadowed.yaml"), "--duration", "4"], cwd=work,
                          env={**os.environ, "PYTHONPATH": ""}, capture_output=True, text=True, timeout=120)
    out = done.stdout + done.stderr
    assert SHADOW not in out
    assert re.search(r"^counter\s+\| .*agent counter started", out, re.M), out
    assert re.search(r"^beside\s+\| .*agent beside started", out, re.M), out
    assert marker.read_text() == "started"  # the agent beside the graph file was found and ran
    assert done.returncode == 0, out


def test_a_timed_run_whose_agent_only_ever_crashed_fails_and_names_it(tmp_path: Path) -> None:
    marker = tmp_path / "starts.txt"
    graph = tmp_path / "crashloop.yaml"
    graph.write_text(f"""\
name: crashloop
agents:
  source: {{type: sample_agents:Source, params: {{count: 5}}}}
  flaky:
    type: sample_agents:CrashOnStart
    params: {{marker: "{marker}", crashes: 1000}}
    restart: {{backoff_initial: 0.2, backoff_max: 1}}
""")
    done = graphrun("run", str(graph), "--duration", "6", cwd=tmp_path)
    out = done.stdout
    assert done.returncode == 1, out + done.stderr
    crashes = out.count("graphrun: flaky crashed (exit code 1)")
    assert crashes >= 2  # it was restarted, and crashed again, until the time was up
    verdict = re.search(r"^graphrun: never came up: (.*)$", out, re.M)
    assert verdict is not None, out
    assert verdict.group(1) == f"flaky (crashed {crashes} times, last exit code 1; see its messages above)"
    assert re.search(r"^source\s+\| .*agent source started", out, re.M)  # the other agent ran, and is not blamed
