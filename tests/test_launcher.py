"""`graphrun GRAPH` runs a whole graph: its own Redis, one process per agent, supervision."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import redis

from conftest import TESTS, wait_until

ROOT = TESTS.parent


def graphrun(*args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(TESTS)}
    return subprocess.run([sys.executable, "-m", "graphrun", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_hello_runs_end_to_end_and_stops_cleanly(tmp_path: Path) -> None:
    done = graphrun(str(ROOT / "graphs" / "hello.yaml"), "--duration", "5", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert re.search(r"graphrun: redis main: started redis://127\.0\.0\.1:\d+/0", out)
    printed = [int(m) for m in re.findall(r"^printer\s+\| values: \{'value': (\d+), 'seq': \d+\}", out, re.M)]
    assert len(printed) >= 10
    assert all(v % 2 == 0 for v in printed)  # doubled
    for label in ("counter", "doubler.0", "doubler.1", "printer"):
        assert re.search(rf"^{re.escape(label)}\s+\| .*agent \w+ stopped", out, re.M), label
    # Redis data is kept for the next run, beside the working folder.
    assert (tmp_path / ".graphrun" / "hello" / "redis-main").is_dir()


def test_run_with_an_external_redis_and_one_node(tmp_path: Path, redis_server) -> None:
    graph = tmp_path / "two_nodes.yaml"
    graph.write_text("""\
name: nodes
redis: {main: {}}
nodes:
  cell: {redis: main}
  office: {redis: main}
agents:
  source: {type: sample_agents:Source, node: cell, params: {count: 50}, outputs: {items: main:items}}
  relay: {type: sample_agents:Relay, node: office, inputs: {items: source.items}, outputs: {copies: main:copies}}
""")
    done = graphrun(str(graph), "--node", "cell", "--redis", f"main={redis_server.url}", "--duration", "3", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    client = redis.Redis.from_url(redis_server.url)
    assert client.xlen("items") == 50
    assert client.exists("copies") == 0  # the office node's agent did not run here
    assert "relay" not in done.stdout


def test_a_crashing_agent_is_restarted_with_backoff(tmp_path: Path) -> None:
    marker = tmp_path / "starts.txt"
    graph = tmp_path / "crashy.yaml"
    graph.write_text(f"""\
name: crashy
agents:
  flaky:
    type: sample_agents:CrashOnStart
    params: {{marker: "{marker}", crashes: 2}}
    restart: {{backoff_initial: 0.2, backoff_max: 1}}
""")
    done = graphrun(str(graph), "--duration", "6", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert marker.read_text().count("start") == 3  # two crashes, then it stayed up
    assert "flaky crashed (exit code 1); restarting in 0.2 s" in done.stdout
    assert "flaky crashed (exit code 1); restarting in 0.4 s" in done.stdout


def test_an_agent_that_cannot_start_makes_the_launch_fail(tmp_path: Path) -> None:
    graph = tmp_path / "broken.yaml"
    graph.write_text("""\
name: broken
agents:
  source: {type: sample_agents:Source}
  misconfigured: {type: sample_agents:Unstartable}
""")
    done = graphrun(str(graph), "--duration", "60", cwd=tmp_path)
    assert done.returncode == 1
    assert "misconfigured | graphrun: agent 'misconfigured' cannot start: the device /dev/nothing does not exist" in done.stdout
    assert "graphrun: could not start: misconfigured" in done.stdout
    assert "source finished" not in done.stdout  # the others were stopped, not left running


def test_an_agent_waits_for_an_unreachable_redis_and_still_stops_promptly(tmp_path: Path) -> None:
    graph = tmp_path / "unreachable.yaml"
    graph.write_text("""\
name: unreachable
redis: {main: {url: "redis://127.0.0.1:1/0"}}
agents:
  source: {type: sample_agents:Source}
""")
    done = graphrun(str(graph), "--duration", "2", cwd=tmp_path)
    assert done.returncode == 0
    assert "Redis unreachable" in done.stdout
    assert "did not stop" not in done.stdout


def test_an_invalid_graph_is_refused_before_anything_starts(tmp_path: Path) -> None:
    graph = tmp_path / "invalid.yaml"
    graph.write_text("name: x\nagents:\n  a: {type: nope.nope}\n")
    done = graphrun(str(graph), cwd=tmp_path)
    assert done.returncode == 1
    assert f"{graph}:3:13: unknown agent type 'nope.nope'" in done.stderr
    assert not (tmp_path / ".graphrun").exists()


def test_sigterm_lets_agents_finish_and_stops_redis(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(TESTS)}
    proc = subprocess.Popen([sys.executable, "-m", "graphrun", str(ROOT / "graphs" / "hello.yaml")], cwd=tmp_path,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    assert proc.stdout is not None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        lines.append(line)
        started = len(re.findall(r"agent \w+ started", "".join(lines)))
        if started == 4 and any(x.startswith("printer") and "values:" in x for x in lines):
            break
    port = int(re.search(r"127\.0\.0\.1:(\d+)", "".join(lines)).group(1))  # type: ignore[union-attr]
    proc.send_signal(signal.SIGTERM)
    rest, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0
    assert len(re.findall(r"agent \w+ stopped", rest)) == 4
    wait_until(lambda: not _answers(port), timeout=10, what="Redis to stop")


def _answers(port: int) -> bool:
    try:
        return bool(redis.Redis(port=port, socket_connect_timeout=0.5).ping())
    except redis.ConnectionError:
        return False
