"""The next read riding on a flush's round trip: what it takes is handled like any read,
and a stop leaves none of it pending. Real redis-server, real runner threads."""

from __future__ import annotations

import threading

import redis
from conftest import read_messages, wait_until, write_messages
from graphrun.graph import Graph
from graphrun.redis_server import RedisServer
from graphrun.runner import AgentRunner

GRAPH = """\
name: t
agents:
  relay:
    type: sample_agents:Relay
    params: {delay_ms: 2}
    inputs: {items: {from: "main:in", batch: 10}}
    outputs: {copies: main:out}
"""


def run(graph: Graph, server: RedisServer) -> tuple[AgentRunner, threading.Thread]:
    runner = AgentRunner(graph, "relay", replica=0, redis_urls={"main": server.url})
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    return runner, thread


def test_a_stop_in_the_middle_of_a_backlog_leaves_nothing_read_unhandled(
        redis_server: RedisServer, redis_client: redis.Redis, graph_file) -> None:
    graph = graph_file(GRAPH)
    write_messages(redis_client, "in", [{"seq": i} for i in range(400)])
    runner = AgentRunner(graph, "relay", replica=0, redis_urls={"main": redis_server.url})
    flush = runner._outbox.flush

    def flush_then_stop(then=None):  # the stop comes just after a flush that read ahead: the worst moment
        ahead = flush(then)
        if ahead and redis_client.xlen("out") >= 60:
            runner.request_stop()
        return ahead

    runner._outbox.flush = flush_then_stop
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    wait_until(runner.stopping.is_set, what="the relay well into its backlog, stopped")
    thread.join(30)
    assert not thread.is_alive()
    assert redis_client.xpending("in", "relay")["pending"] == 0  # every entry it read was handled and acknowledged
    handled = [m.payload["seq"] for m in read_messages(redis_client, "out")]
    assert handled == list(range(len(handled))) and 60 <= len(handled) < 400


def test_a_backlog_read_ahead_is_handled_once_each_in_order(
        redis_server: RedisServer, redis_client: redis.Redis, graph_file) -> None:
    graph = graph_file(GRAPH.replace("delay_ms: 2", "delay_ms: 0"))
    write_messages(redis_client, "in", [{"seq": i} for i in range(500)])
    runner, thread = run(graph, redis_server)
    try:
        wait_until(lambda: redis_client.xlen("out") >= 500, what="the whole backlog relayed")
        assert [m.payload["seq"] for m in read_messages(redis_client, "out")] == list(range(500))
        assert redis_client.xpending("in", "relay")["pending"] == 0
    finally:
        runner.request_stop()
        thread.join(30)
