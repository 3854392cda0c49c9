"""Memory bounds: frame streams bounded by bytes, a full Redis recovered from, and entries
trimmed before a slow reader read them said out loud."""

from __future__ import annotations

import logging
import threading

import pytest
import redis

from conftest import read_messages, wait_until, write_messages
from graphrun import transport
from graphrun.graph import DEFAULT_MAX_BYTES
from graphrun.redis_server import RedisServer
from graphrun.runner import AgentRunner

SOURCE = """\
name: t
agents:
  source:
    type: runner_agents:FrameSource
    params: {{count: {count}, size: {size}}}
    outputs: {{frames: {{stream: frames{bounds}}}}}
  recorder:
    type: runner_agents:BatchRecorder
    inputs: {{frames: source.frames}}
    outputs: {{sizes: {{stream: sizes}}}}
"""


def test_a_frame_stream_is_bounded_by_bytes_as_well_as_by_entries(redis_client, graph_file, start_agent) -> None:
    graph = graph_file(SOURCE.format(count=40, size=1 << 20, bounds=", max_bytes: 8mb"))
    assert graph.agents["source"].outputs["frames"].max_bytes == 8 << 20
    source = start_agent(graph, "source")
    wait_until(lambda: source.counters.sent == 40, what="40 frames written")
    assert 1 <= redis_client.xlen("frames") <= 9  # 8 MB of 1 MB frames, not maxlen's 10,000


def test_outputs_are_bounded_to_a_quarter_gigabyte_unless_the_graph_says_otherwise(graph_file) -> None:
    graph = graph_file(SOURCE.format(count=1, size=1, bounds=""))
    assert graph.agents["source"].outputs["frames"].max_bytes == DEFAULT_MAX_BYTES == 256 << 20


def test_a_full_redis_is_reported_and_recovered_from_without_losing_a_frame(graph_file, caplog) -> None:
    """200 frames of 512 KB (100 MB) through a Redis capped at 40 MB: the source waits in a
    'full' state, trims what its reader consumed, and every frame arrives in order."""
    caplog.set_level(logging.INFO, logger="graphrun.runner")
    with RedisServer(name="full", maxmemory="40mb", persistence="none") as server:
        client = redis.Redis.from_url(server.url)
        transport.ensure_group(client, "frames", "recorder")  # the reader is known from the start
        graph = graph_file(SOURCE.format(count=200, size=512 << 10, bounds=", max_bytes: 1gb"))
        urls = {"main": server.url}
        source = AgentRunner(graph, "source", replica=0, redis_urls=urls)
        recorder = AgentRunner(graph, "recorder", replica=0, redis_urls=urls)
        died: list[BaseException] = []

        def run(runner: AgentRunner) -> None:
            try:
                runner.run()
            except BaseException as exc:  # noqa: BLE001 - the test reports it
                died.append(exc)

        threads = [threading.Thread(target=run, args=(r,), daemon=True) for r in (source, recorder)]
        threads[0].start()
        try:
            wait_until(lambda: str(source.status.get("redis", "")).startswith("full") or died, what="Redis full")
            assert not died, died
            threads[1].start()
            wait_until(lambda: sum(m["size"] for m in read_messages(client, "sizes")) == 200 or died,
                       timeout=60, what="all 200 frames read")
            assert not died, died
        finally:
            for r in (source, recorder):
                r.request_stop()
            for t in threads:
                t.join(10)
        seqs = [s for m in read_messages(client, "sizes") for s in m["seqs"]]
        assert seqs == list(range(200))
        assert "Redis is full" in caplog.text and "Redis has room again" in caplog.text


def test_entries_trimmed_before_a_reader_read_them_are_logged(redis_client, graph_file, caplog) -> None:
    caplog.set_level(logging.WARNING, logger="graphrun.runner")
    graph = graph_file("""\
name: t
agents:
  relay:
    type: sample_agents:Relay
    inputs: {items: "main:in"}
    outputs: {copies: {stream: out}}
""")
    transport.ensure_group(redis_client, "in", "relay")
    pipe = redis_client.pipeline()
    for seq in range(50):
        pipe.xadd("in", {"h": b""}, maxlen=10, approximate=False)  # the reader is away: 40 trimmed
    pipe.execute()
    redis_client.xtrim("in", maxlen=0)
    write_messages(redis_client, "in", [{"seq": s} for s in range(10)])
    runner = AgentRunner(graph, "relay", replica=0, redis_urls={"main": redis_client.connection_pool.connection_kwargs and
                                                               f"redis://127.0.0.1:{redis_client.connection_pool.connection_kwargs['port']}"},
                         health_interval=0.2)
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: "were trimmed before relay read them" in caplog.text, what="the warning")
    finally:
        runner.request_stop()
        thread.join(10)
    assert "50 entries of input 'items' were trimmed before relay read them (50 in all)" in caplog.text
