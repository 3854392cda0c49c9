"""Nothing is lost when an agent or Redis is killed in the middle of a stream."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import redis
from conftest import TESTS, caught_up, read_messages, wait_until, write_messages
from graphrun import codec
from graphrun.redis_server import RedisServer
from graphrun.runner import AgentRunner

GRAPH = """\
name: crash
agents:
  relay:
    type: sample_agents:Relay
    params: {{delay_ms: {delay}}}
    inputs: {{items: {{from: "main:in", batch: 32}}}}
    outputs: {{copies: {{stream: out, maxlen: 1000000}}}}
"""


def agent_process(graph: Path, url: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(TESTS)}
    return subprocess.Popen([sys.executable, "-m", "graphrun", "agent", str(graph), "relay", "--replica", "0",
                             "--redis", f"main={url}"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def test_kill_9_in_the_middle_of_10000_messages_loses_none(redis_server: RedisServer, redis_client: redis.Redis,
                                                            tmp_path: Path) -> None:
    graph = tmp_path / "crash.yaml"
    graph.write_text(GRAPH.format(delay=0.2))
    write_messages(redis_client, "in", [{"seq": i} for i in range(10_000)])

    first = agent_process(graph, redis_server.url)
    # Kill when a batch is in hand (read, not yet acknowledged), not in the instant between two.
    wait_until(lambda: redis_client.xlen("out") >= 2_000 and redis_client.xpending("in", "relay")["pending"] > 0,
               timeout=120, what="2,000 copies before the kill, with a batch in hand")
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert redis_client.xlen("out") < 10_000, "the agent finished before it could be killed"
    in_flight = redis_client.xpending("in", "relay")["pending"]
    assert in_flight > 0, "the kill should catch a batch in hand"

    second = agent_process(graph, redis_server.url)
    try:
        wait_until(lambda: caught_up(redis_client, "in", "relay"), timeout=180, what="the rest of the stream")
    finally:
        second.terminate()
        assert second.wait(20) == 0
    seen = [m["seq"] for m in read_messages(redis_client, "out")]
    assert set(seen) == set(range(10_000))
    # Whatever was in hand at the kill is handled again, never skipped: at least once.
    assert len(seen) >= 10_000


def test_a_redis_crash_loses_nothing_it_acknowledged(redis_server: RedisServer, graph_file) -> None:
    client = redis.Redis.from_url(redis_server.url)
    graph = graph_file(GRAPH.format(delay=2))  # about 3 s of work: the crash lands in the middle
    write_messages(client, "in", [{"seq": i} for i in range(1_500)])
    runner = AgentRunner(graph, "relay", replica=0, redis_urls={"main": redis_server.url})
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: client.xlen("out") >= 300, what="300 copies before the crash")
        redis_server.kill()
        redis_server.start()  # same port and data folder: the append-only file is replayed
        client = redis.Redis.from_url(redis_server.url)
        wait_until(lambda: caught_up(client, "in", "relay"), timeout=120, what="recovery after the crash")
        wait_until(lambda: runner.counters.redis_errors + runner.counters.redis_restarts >= 1,
                   what="the agent to notice the crash")
    finally:
        runner.request_stop()
        thread.join(15)
    assert {m["seq"] for m in read_messages(client, "out")} == set(range(1_500))


def test_a_redis_that_restarts_empty_gets_its_groups_back(redis_server: RedisServer, graph_file, tmp_path: Path) -> None:
    client = redis.Redis.from_url(redis_server.url)
    graph = graph_file(GRAPH.format(delay=0))
    runner = AgentRunner(graph, "relay", replica=0, redis_urls={"main": redis_server.url})
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    try:
        write_messages(client, "in", [{"seq": i} for i in range(10)])
        wait_until(lambda: client.xlen("out") == 10, what="the first ten")
        redis_server.kill()
        for path in redis_server.data_dir.rglob("*"):  # its data is gone too
            if path.is_file():
                path.unlink()
        redis_server.start()
        client = redis.Redis.from_url(redis_server.url)
        wait_until(lambda: client.exists("in") and client.xinfo_groups("in"), what="the group made again")
        write_messages(client, "in", [{"seq": i} for i in range(10, 20)])
        wait_until(lambda: client.xlen("out") == 10, what="the next ten, in the new server")
    finally:
        runner.request_stop()
        thread.join(15)
    assert [m["seq"] for m in read_messages(client, "out")] == list(range(10, 20))


def test_a_source_keeps_what_it_made_while_redis_was_down(redis_server: RedisServer, graph_file) -> None:
    client = redis.Redis.from_url(redis_server.url)
    graph = graph_file("""\
name: outage
agents:
  source: {type: sample_agents:Source, params: {count: 3000}, outputs: {items: {stream: items, maxlen: 100000}}}
""")
    runner = AgentRunner(graph, "source", replica=0, redis_urls={"main": redis_server.url})
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: client.xlen("items") >= 200, what="200 items before the outage")
        redis_server.stop()  # a clean stop this time: the server is simply gone for a while
        wait_until(lambda: runner.counters.redis_errors >= 3, what="the source noticing")
        redis_server.start()
        client = redis.Redis.from_url(redis_server.url)
        # The last item written, not a length: an outage may have written some twice (at-least-once).
        wait_until(lambda: last_seq(client, "items") == 2999, timeout=60, what="all 3000 items")
    finally:
        runner.request_stop()
        thread.join(15)
    seqs = [m["seq"] for m in read_messages(client, "items")]
    assert sorted(set(seqs)) == list(range(3000))


def last_seq(client: redis.Redis, stream: str) -> int | None:
    newest = client.xrevrange(stream, count=1)
    return codec.decode(newest[0][1])["seq"] if newest else None
