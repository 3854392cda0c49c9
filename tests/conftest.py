"""Shared fixtures: real servers on free ports, nothing mocked."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from graphrun.redis_server import RedisServer


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A fresh redis-server for one test (TCP on a free port, plus a unix socket)."""
    with RedisServer(name="test") as server:
        yield server


@pytest.fixture
def redis_client(redis_server: RedisServer) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_server.url)
    yield client
    client.close()


# --- running agents of a graph in this process -----------------------------------------

import subprocess  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

from graphrun import codec  # noqa: E402
from graphrun.graph import Graph, load_graph  # noqa: E402
from graphrun.message import Message  # noqa: E402
from graphrun.runner import AgentRunner  # noqa: E402

TESTS = Path(__file__).parent


def run_validate(path: Path) -> subprocess.CompletedProcess[str]:
    """``graphrun validate PATH`` as a user runs it (the test agents importable, no other environment)."""
    return subprocess.run([sys.executable, "-m", "graphrun", "validate", str(path)], capture_output=True, text=True,
                          env={"PYTHONPATH": str(TESTS), "PATH": "/usr/bin:/bin"}, timeout=120, check=False)


def line_of(text: str, needle: str) -> int:
    """The line (from 1) of ``text`` where ``needle`` first stands: where a report should point."""
    return next(n for n, line in enumerate(text.splitlines(), 1) if needle in line)


def wait_until(condition: Callable[[], object], timeout: float = 30.0, what: str = "condition") -> None:
    """Poll ``condition``; the timeout only guards against a hang, it asserts no speed."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return
        time.sleep(0.02)
    raise AssertionError(f"gave up waiting for {what} after {timeout:.0f} s")


def write_messages(client: redis.Redis, stream: str, payloads: list[dict], producer: str = "test") -> list[str]:
    pipe = client.pipeline(transaction=False)
    for payload in payloads:
        pipe.xadd(stream, codec.encode(Message(payload, producer=producer)))
    return [i.decode() for i in pipe.execute()]


def read_messages(client: redis.Redis, stream: str) -> list[Message]:
    return [codec.decode(fields) for _, fields in client.xrange(stream)]


def caught_up(client: redis.Redis, stream: str, group: str) -> bool:
    """The group has read to the stream's end and acknowledged everything it read.

    (Compares ids rather than the group's ``lag``, which Redis 7.0 miscounts after
    replaying its append-only file.)
    """
    try:
        info = {g["name"].decode(): g for g in client.xinfo_groups(stream)}.get(group)
    except redis.ResponseError:
        return False
    last = client.xrevrange(stream, count=1)
    return bool(info and last and info["last-delivered-id"] == last[0][0] and info["pending"] == 0)


@pytest.fixture
def graph_file(tmp_path: Path) -> Callable[[str], Graph]:
    """Write a graph's YAML to a file and load it (agents of tests/sample_agents.py importable)."""

    def make(text: str, name: str = "graph.yaml") -> Graph:
        path = tmp_path / name
        path.write_text(text)
        return load_graph(path)

    return make


@pytest.fixture
def start_agent(redis_server: RedisServer) -> Iterator[Callable[..., AgentRunner]]:
    """Start one replica of a graph's agent in a thread; every one is stopped at teardown."""
    started: list[tuple[AgentRunner, threading.Thread]] = []

    def start(graph: Graph, name: str, replica: int = 0, **kwargs: object) -> AgentRunner:
        runner = AgentRunner(graph, name, replica=replica, redis_urls={"main": redis_server.url}, **kwargs)
        thread = threading.Thread(target=runner.run, name=f"{name}-{replica}", daemon=True)
        thread.start()
        started.append((runner, thread))
        return runner

    yield start
    for runner, _ in started:
        runner.request_stop()
    for _, thread in started:
        thread.join(15)


# --- an MQTT broker ------------------------------------------------------------------------

from graphrun_agents.mqtt.broker import Mosquitto, find_mosquitto  # noqa: E402


@pytest.fixture
def mosquitto() -> Iterator[Mosquitto]:
    """A fresh mosquitto for one test: a generated config (a listener on 127.0.0.1 on a free
    port, anonymous clients, persistence off); ``stop()``/``start()`` restart it on that port."""
    if find_mosquitto() is None:
        pytest.skip("mosquitto is not installed (tests/run installs it as root: apt-get install mosquitto)")
    with Mosquitto() as broker:
        yield broker
