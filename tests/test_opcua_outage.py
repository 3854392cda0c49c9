"""End to end: verdicts on real Redis streams, the opcua agent under the runner, and the
OPC UA server (``graphrun opcua-sim``, a process of its own) killed in the middle of the
run, or not yet up when the agent starts. Nothing is lost."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from graphrun.graph import load_graph
from graphrun.redis_server import RedisServer
from graphrun.runner import AgentRunner
from graphrun_agents.modbus.simulator import free_port
from plc_helpers import every_verdict_handled, send_part, wait_for

GRAPH = """
name: opcua-outage
redis: {{main: {{url: "{url}"}}}}
agents:
  plc:
    type: opcua
    params:
      url: {plc}
      timeout: 0.5
      reconnect_min: 0.05
      reconnect_max: 0.2
      nodes:
        sequence: ns=2;s=Result.Sequence
        part_id: ns=2;s=Result.PartId
        outcome: ns=2;s=Result.Outcome
    inputs:
      front: main:verdicts.front
      back: main:verdicts.back
"""


class SimProcess:
    """``graphrun opcua-sim`` in a process of its own; its results, read from its output."""

    def __init__(self, graph: Path, url: str):
        self.results: list[dict] = []
        self.process = subprocess.Popen(
            [sys.executable, "-m", "graphrun", "opcua-sim", "--graph", str(graph), "--agent", "plc", "--url", url],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.log: list[str] = []
        self._listening = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        threading.Thread(target=self._read_log, daemon=True).start()
        if not self._listening.wait(60):
            raise AssertionError("the simulator did not start:\n" + "".join(self.log))

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.results.append(json.loads(line))

    def _read_log(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.log.append(line)
            if "simulator on" in line:  # it listens
                self._listening.set()

    def kill(self) -> None:
        """A power cut: no goodbye to the client, the values gone."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)
        self._reader.join(5)


@pytest.fixture
def line(tmp_path: Path) -> Iterator[tuple[Path, str, redis.Redis, RedisServer]]:
    with RedisServer(name="opcua-outage") as server:
        url = f"opc.tcp://127.0.0.1:{free_port()}/plc/"
        path = tmp_path / "line.yaml"
        path.write_text(GRAPH.format(url=server.url, plc=url))
        client = redis.Redis.from_url(server.url)
        yield path, url, client, server
        client.close()


def run_agent(path: Path) -> tuple[AgentRunner, threading.Thread]:
    runner = AgentRunner(load_graph(path), "plc")
    thread = threading.Thread(target=runner.run, name="opcua-agent", daemon=True)
    thread.start()
    return runner, thread


def test_the_server_killed_in_the_middle_of_300_parts_loses_no_result(
    line: tuple[Path, str, redis.Redis, RedisServer],
) -> None:
    path, url, client, _ = line
    first = SimProcess(path, url)
    runner, thread = run_agent(path)
    second = None
    try:
        for part_id in range(1, 101):
            send_part(client, part_id)
        wait_for(lambda: len(first.results) == 100, "the first 100 results")
        wait_for(lambda: runner.status.get("written") == 100, "the agent to learn the server has them")

        first.kill()
        for part_id in range(101, 201):
            send_part(client, part_id)
        wait_for(lambda: runner.status.get("server") == "unreachable", "the agent to see the outage")
        time.sleep(0.5)
        # The parts that could not be written keep their verdicts unacknowledged, in Redis.
        assert client.xpending("verdicts.front", "plc")["pending"] > 0
        assert not every_verdict_handled(client)

        second = SimProcess(path, url)  # the server is back (its values lost in the outage)
        for part_id in range(201, 301):
            send_part(client, part_id)
        wait_for(lambda: every_verdict_handled(client), "every verdict to be handled and acknowledged")
        wait_for(lambda: runner.status.get("server") == "connected", "the agent to say the server is back")
    finally:
        runner.request_stop()
        thread.join(15)
        if second is not None:
            second.kill()

    written = [r["part_id"] for r in first.results + second.results]
    assert set(written) == set(range(1, 301))  # nothing lost
    assert written == sorted(written)  # nothing reordered
    # The counter goes on through the outage: one number per result, none skipped or repeated.
    assert [r["sequence"] for r in first.results + second.results] == list(range(1, 301))
    assert [r["outcome"] for r in second.results] == [int(p % 7 == 0) for p in range(101, 301)]


def test_an_agent_started_before_its_server_holds_the_verdicts_and_writes_once_it_listens(
    line: tuple[Path, str, redis.Redis, RedisServer],
) -> None:
    path, url, client, _ = line
    runner, thread = run_agent(path)
    sim = None
    try:
        wait_for(lambda: runner.started.is_set(), "the agent to start without its server")
        assert runner.status["server"] == "waiting for server"
        for part_id in range(1, 11):
            send_part(client, part_id)
        wait_for(lambda: client.xpending("verdicts.back", "plc")["pending"] == 10, "the verdicts to be held")
        sim = SimProcess(path, url)
        wait_for(lambda: every_verdict_handled(client), "every verdict to be written and acknowledged")
    finally:
        runner.request_stop()
        thread.join(15)
        if sim is not None:
            sim.kill()
    assert [r["part_id"] for r in sim.results] == list(range(1, 11))


def test_the_agent_killed_in_the_middle_loses_no_result_and_its_successor_continues_the_count(
    line: tuple[Path, str, redis.Redis, RedisServer],
) -> None:
    path, url, client, server = line
    sim = SimProcess(path, url)

    def agent() -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "graphrun", "agent", str(path), "plc",
                                 "--redis", f"main={server.url}", "--log-level", "WARNING"])

    first = agent()
    second = None
    try:
        for part_id in range(1, 151):
            send_part(client, part_id)
        wait_for(lambda: len(sim.results) >= 50, "the first results")
        first.send_signal(signal.SIGKILL)  # in the middle of writing: some verdicts written, not acknowledged
        first.wait(10)
        for part_id in range(151, 201):
            send_part(client, part_id)
        second = agent()
        wait_for(lambda: every_verdict_handled(client), "every verdict to be handled and acknowledged")
    finally:
        for process in (first, second):
            if process is not None and process.poll() is None:
                process.terminate()
                process.wait(10)
        sim.kill()
    written = [r["part_id"] for r in sim.results]
    # Nothing lost. (The order may change at the crash: the successor receives the held
    # verdicts again first, and a part whose second view the first agent never read closes
    # after them. A part written twice, killed between its write and its acknowledgement,
    # would show its part id twice.)
    assert set(written) == set(range(1, 201))
    sequences = [r["sequence"] for r in sim.results]
    assert sequences == list(range(1, len(sequences) + 1))  # the successor continued the server's count
