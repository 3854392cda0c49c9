"""The runner's start and stop: Redis instances named only in params, agents that fail to
start under ``running()``, and a prompt stop while Redis is unreachable."""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
import time

import pytest
import redis

from conftest import wait_until
from graphrun.errors import AgentStartError
from graphrun.graph import load_graph
from graphrun.redis_server import RedisServer, free_port
from graphrun.runner import AgentRunner
from graphrun.testing import running

TWO_INSTANCES = """\
name: t
redis: {main: {}, store: {}}
agents:
  user:
    type: runner_agents:UsesInstance
    params: {store: store}
"""


@pytest.fixture
def store() -> RedisServer:
    with RedisServer(name="store") as server:
        yield server


def test_an_agent_reaches_an_instance_only_its_params_name(redis_server, store, graph_file) -> None:
    graph = graph_file(TWO_INSTANCES)
    with running(graph, redis_urls={"main": redis_server.url, "store": store.url}):
        assert redis.Redis.from_url(store.url).get("marker") == b"user"


def test_graphrun_agent_passes_every_redis_option_to_the_agent(redis_server, store, tmp_path) -> None:
    path = tmp_path / "graph.yaml"
    path.write_text(TWO_INSTANCES)
    done = subprocess.run(
        [sys.executable, "-m", "graphrun", "agent", str(path), "user", "--duration", "0.5",
         "--redis", f"main={redis_server.url}", "--redis", f"store={store.url}"],
        capture_output=True, text=True, timeout=60, cwd=str(tmp_path.parent),
        env={**__import__("os").environ, "PYTHONPATH": str(__import__("pathlib").Path(__file__).parent)},
    )
    assert done.returncode == 0, done.stderr
    assert redis.Redis.from_url(store.url).get("marker") == b"user"


def test_running_fails_at_once_when_an_agent_cannot_start(redis_server, graph_file) -> None:
    graph = graph_file("""\
name: t
agents:
  broken:
    type: sample_agents:Unstartable
""")
    started = time.monotonic()
    with pytest.raises(AgentStartError, match="/dev/nothing"):
        with running(graph, redis_urls={"main": redis_server.url}):
            pytest.fail("the with block must not be entered")
    assert time.monotonic() - started < 10  # at once, not after a test's timeout


def test_a_stop_while_redis_is_unreachable_is_prompt_and_produces_nothing_more(redis_server, graph_file, caplog) -> None:
    graph = graph_file("""\
name: t
agents:
  source:
    type: runner_agents:StopWatchingSource
    outputs: {items: {stream: out}}
""")
    runner = AgentRunner(graph, "source", replica=0, redis_urls={"main": redis_server.url})
    thread = threading.Thread(target=runner.run, daemon=True)
    caplog.set_level(logging.INFO, logger="graphrun.runner")
    thread.start()
    wait_until(lambda: runner.counters.sent > 10, what="the source writing")
    redis_server.kill()
    wait_until(lambda: runner.counters.redis_errors >= 2, what="the source noticing the outage")
    stop_requested = time.monotonic()
    runner.request_stop()
    thread.join(5)  # generous: the stop grace is one second, the launcher kills after 15
    assert not thread.is_alive(), "the runner did not stop within 5 s of the request"
    assert time.monotonic() - stop_requested < 5
    assert runner.status["produced_while_stopping"] == 0
    text = caplog.text
    assert text.count("output(s) not written") <= 1
    assert "Redis reachable again" not in text


def test_a_stop_while_connecting_to_an_unreachable_redis_is_prompt(tmp_path) -> None:
    path = tmp_path / "graph.yaml"
    path.write_text("""\
name: t
agents:
  relay:
    type: sample_agents:Relay
    inputs: {items: "main:in"}
""")
    runner = AgentRunner(load_graph(path), "relay", replica=0, redis_urls={"main": f"redis://127.0.0.1:{free_port()}"})
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    wait_until(lambda: runner.counters.redis_errors >= 1, what="the first failed connection")
    runner.request_stop()
    thread.join(5)
    assert not thread.is_alive()
