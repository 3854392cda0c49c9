"""`graphrun GRAPH` runs a whole graph: its own Redis, one process per agent, supervision."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import redis

from conftest import TESTS, wait_until
from graphrun.redis_server import free_port

ROOT = TESTS.parent


ENV = {**os.environ, "PYTHONPATH": str(TESTS)}  # the test agents importable


def graphrun(*args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "graphrun", *args], cwd=cwd, env=ENV, capture_output=True,
                          text=True, timeout=timeout)


PRINTED = r"^printer\s+\| values: \{'value': (\d+), 'seq': \d+\}"


def test_hello_runs_end_to_end_and_stops_cleanly(tmp_path: Path) -> None:
    graphs, elsewhere = tmp_path / "graphs", tmp_path / "elsewhere"
    graphs.mkdir(), elsewhere.mkdir()
    shutil.copy(ROOT / "graphs" / "hello.yaml", graphs / "hello.yaml")
    run = Graphrun(str(graphs / "hello.yaml"), cwd=elsewhere)
    run.wait_for(lambda out: len(re.findall(PRINTED, out, re.M)) >= 10, what="ten values printed")
    run.process.send_signal(signal.SIGINT)  # Ctrl-C
    out = run.finish()
    assert run.process.returncode == 0, out
    assert re.search(r"graphrun: redis main: started redis://127\.0\.0\.1:\d+/0", out)
    printed = [int(m) for m in re.findall(PRINTED, out, re.M)]
    assert len(printed) >= 10
    assert all(v % 2 == 0 for v in printed)  # doubled
    for label in ("counter", "doubler.0", "doubler.1", "printer"):
        assert re.search(rf"^{re.escape(label)}\s+\| .*agent \w+ stopped", out, re.M), label
    # Redis data is kept for the next run beside the graph file, whatever the working folder.
    assert (graphs / ".graphrun" / "hello" / "redis-main").is_dir()
    assert not (elsewhere / ".graphrun").exists()


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
    client = redis.Redis.from_url(redis_server.url)
    run = Graphrun(str(graph), "--node", "cell", "--redis", f"main={redis_server.url}", cwd=tmp_path)
    run.wait_for(lambda out: client.xlen("items") == 50, what="the source's 50 items")
    run.process.send_signal(signal.SIGINT)
    out = run.finish()
    assert run.process.returncode == 0, out
    assert client.exists("copies") == 0  # the office node's agent did not run here
    assert "relay" not in out


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
    run = Graphrun(str(graph), cwd=tmp_path)
    run.wait_for(lambda out: re.search(r"^flaky\s+\| .*agent flaky started", out, re.M) is not None,
                 what="the third start to come up")
    run.process.send_signal(signal.SIGINT)
    out = run.finish()
    assert run.process.returncode == 0, out
    assert marker.read_text().count("start") == 3  # two crashes, then it stayed up
    assert "flaky crashed (exit code 1); restarting in 0.2 s" in out
    assert "flaky crashed (exit code 1); restarting in 0.4 s" in out


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


# A stop request must not wait out a Redis that does not answer: these bounds are far above
# what a stop takes and well below the launcher's STOP_GRACE kill, so only a hang crosses them.
STOP_BOUND = 5.0


def unreachable_redis() -> str:
    """A --redis option naming a port nobody listens on."""
    return f"main=redis://127.0.0.1:{free_port()}/0"


def test_with_redis_unreachable_a_timed_run_still_ends_when_its_time_is_up(tmp_path: Path) -> None:
    started = time.monotonic()
    # Long enough for agent processes to start on a busy machine and find Redis away.
    done = graphrun("run", str(ROOT / "graphs" / "hello.yaml"), "--redis", unreachable_redis(), "--duration", "8",
                    cwd=tmp_path)
    elapsed = time.monotonic() - started
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    assert "Redis unreachable" in out  # the agents did wait for it
    stopped_without_hanging(out, elapsed, 8 + STOP_BOUND)


def test_sigterm_stops_a_run_whose_redis_is_unreachable(tmp_path: Path) -> None:
    run = Graphrun("run", str(ROOT / "graphs" / "hello.yaml"), "--redis", unreachable_redis(), cwd=tmp_path)
    # The source has tried Redis a few times, and keeps trying, when the stop comes.
    run.wait_for(lambda out: len(re.findall(r"^counter\s+\| .*Redis unreachable", out, re.M)) >= 3,
                 what="the source to retry Redis")
    signalled = time.monotonic()
    run.process.send_signal(signal.SIGTERM)
    out = run.finish()
    elapsed = time.monotonic() - signalled
    assert run.process.returncode == 0, out
    stopped_without_hanging(out, elapsed, STOP_BOUND)


def stopped_without_hanging(out: str, elapsed: float, bound: float) -> None:
    assert elapsed < bound, f"the run took {elapsed:.1f} s to end:\n{out}"
    assert out.count("output(s) not written") <= 1, out  # an unwritten output is reported once
    assert "did not stop" not in out  # no agent needed the launcher's kill


def test_an_invalid_graph_is_refused_before_anything_starts(tmp_path: Path) -> None:
    graph = tmp_path / "invalid.yaml"
    graph.write_text("name: x\nagents:\n  a: {type: nope.nope}\n")
    done = graphrun(str(graph), cwd=tmp_path)
    assert done.returncode == 1
    assert f"{graph}:3:13: unknown agent type 'nope.nope'" in done.stderr
    assert not (tmp_path / ".graphrun").exists()


def test_sigterm_lets_agents_finish_and_stops_redis(tmp_path: Path) -> None:
    run = Graphrun(str(ROOT / "graphs" / "hello.yaml"), cwd=tmp_path)
    run.wait_for(lambda out: len(re.findall(r"agent \w+ started", out)) == 4
                 and re.search(r"^printer\s+\| .*values:", out, re.M) is not None, what="the graph running")
    port = int(re.search(r"127\.0\.0\.1:(\d+)", run.output()).group(1))  # type: ignore[union-attr]
    before = len(run.output())
    run.process.send_signal(signal.SIGTERM)
    rest = run.finish()[before:]
    assert run.process.returncode == 0
    assert len(re.findall(r"agent \w+ stopped", rest)) == 4
    wait_until(lambda: not _answers(port), timeout=10, what="Redis to stop")


class Graphrun:
    """``graphrun ARGS`` running in the background, its output collected as it comes."""

    def __init__(self, *args: str, cwd: Path):
        self.process = subprocess.Popen([sys.executable, "-m", "graphrun", *args], cwd=cwd, env=ENV,
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self._lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.append(line)

    def output(self) -> str:
        return "".join(self._lines)

    def wait_for(self, condition: Callable[[str], bool], what: str) -> None:
        try:
            wait_until(lambda: condition(self.output()), timeout=60, what=what)
        except AssertionError:
            self.process.kill()
            raise

    def finish(self, timeout: float = 60) -> str:
        """Wait for the process to end (killing it if it hangs past ``timeout``); all its output."""
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise
        finally:
            self._reader.join(10)
        return self.output()


def _answers(port: int) -> bool:
    try:
        return bool(redis.Redis(port=port, socket_connect_timeout=0.5).ping())
    except redis.ConnectionError:
        return False
