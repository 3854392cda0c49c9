"""Requests survive faults: an answering agent killed with -9, and a Redis that crashes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from conftest import TESTS, wait_until
from graphrun import GraphClient
from graphrun.redis_server import RedisServer

GRAPH = """\
name: faults
redis: {{main: {{url: "{url}"}}}}
agents:
  relay:
    type: sample_agents:Relay
    params: {{delay_ms: {delay}}}
    inputs: {{items: {{from: "main:in", batch: 8}}}}
    outputs: {{copies: "main:out"}}
"""


def agent_process(graph: Path, url: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(TESTS)}
    return subprocess.Popen([sys.executable, "-m", "graphrun", "agent", str(graph), "relay", "--replica", "0",
                             "--redis", f"main={url}"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def collect(client: GraphClient, tickets: list, answers: list) -> threading.Thread:
    def run() -> None:
        for ticket in tickets:
            answers.append(client.result(ticket))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_requests_in_hand_when_their_agent_is_killed_are_answered_by_its_successor(redis_server: RedisServer,
                                                                                   redis_client, tmp_path):
    path = tmp_path / "faults.yaml"
    path.write_text(GRAPH.format(url=redis_server.url, delay=20))  # 200 requests: about 4 s of work
    first = agent_process(path, redis_server.url)
    second = None
    try:
        with GraphClient(path, timeout=120) as client:
            tickets = client.submit_many("relay.items", [{"seq": i} for i in range(200)])
            answers: list = []
            waiting = collect(client, tickets, answers)
            wait_until(lambda: len(answers) >= 30 and redis_client.xpending("in", "relay")["pending"] > 0,
                       timeout=120, what="30 answers, with a batch in hand")
            first.send_signal(signal.SIGKILL)
            first.wait()
            assert len(answers) < 200, "the agent finished before it could be killed"
            second = agent_process(path, redis_server.url)  # the same consumer: it handles its pending first
            waiting.join(120)
            assert [a["seq"] for a in answers] == list(range(200))  # each answered, once, to its ticket
            assert len({a["by"] for a in answers}) == 2  # by both processes
    finally:
        for process in (first, second):
            if process is not None and process.poll() is None:
                process.terminate()
                process.wait(20)


def test_a_request_waiting_while_redis_crashes_and_restarts_is_answered(redis_server: RedisServer, graph_file,
                                                                        start_agent):
    graph = graph_file(GRAPH.format(url=redis_server.url, delay=0))
    with GraphClient(graph, timeout=60) as client:
        ticket = client.submit("relay.items", {"seq": 1})  # no agent runs yet
        time.sleep(1.5)  # the append-only file is fsynced every second
        redis_server.kill()
        redis_server.start()  # same port and data: the append-only file is replayed
        runner = start_agent(graph, "relay")
        # The client's reply reader reconnects on its own and gets the answer.
        assert client.result(ticket)["seq"] == 1
        assert runner.counters.handled == 1
