"""The runner's delivery rules: what a failed attempt did is undone, each failing message
backs off on its own, and a backlog of frames is handed over in batches."""

from __future__ import annotations

import numpy as np
import redis

from conftest import read_messages, wait_until, write_messages
from graphrun.delivery import RETRY_INITIAL, RETRY_MAX, RetrySchedule


RECORDER = """\
name: t
agents:
  recorder:
    type: runner_agents:BatchRecorder
    inputs:
      frames: {from: "main:frames", batch: 8}
    outputs: {sizes: {stream: sizes}}
"""
FRAME = np.zeros((1024, 1280), np.uint8)  # 1.3 MB


def pending_ids(client: redis.Redis, stream: str, group: str) -> list[str]:
    return [row["message_id"].decode() for row in client.xpending_range(stream, group, "-", "+", 100)]


def test_outputs_and_releases_of_an_attempt_that_raised_are_never_written(redis_client, graph_file, start_agent) -> None:
    graph = graph_file("""\
name: t
agents:
  agent:
    type: runner_agents:FailingRelease
    inputs:
      items: {from: "main:in", batch: 16, max_deliveries: 1}
    outputs: {copies: {stream: out}}
""")
    ids = write_messages(redis_client, "in", [{"seq": 0}, {"seq": 1}, {"seq": 2}])
    runner = start_agent(graph, "agent")
    wait_until(lambda: redis_client.xlen("in:dead") == 1, what="item 1 dead-lettered")
    wait_until(lambda: runner.counters.handled == 2, what="items 0 and 2 handled one by one")
    outputs = [m.payload for m in read_messages(redis_client, "out")]
    assert outputs == [{"seq": 0}]  # once, and nothing of the attempts that raised
    [(_, dead)] = redis_client.xrange("in:dead")
    assert dead[b"dl:id"] == ids[1].encode()
    # Item 2 was held by the successful attempt that handled it alone: still pending, not released.
    assert pending_ids(redis_client, "in", "agent") == [ids[2]]


def test_a_failing_message_backs_off_on_its_own_and_others_are_not_slowed(redis_client, graph_file, start_agent) -> None:
    """Ten poison messages fail thirty times in all; a later message that fails once is
    still retried after the first, short delay, not after a delay grown by the others."""
    graph = graph_file("""\
name: t
agents:
  relay:
    type: runner_agents:FlakyRelay
    params: {poison: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9], fail_once: [10]}
    inputs:
      items: {from: "main:in", max_deliveries: 3}
    outputs: {copies: {stream: out}}
""")
    write_messages(redis_client, "in", [{"seq": s} for s in range(12)])
    start_agent(graph, "relay")
    # Generous bounds: they catch a delay grown by the process's failure count (25.6 s), not speed.
    wait_until(lambda: redis_client.xlen("in:dead") == 10, timeout=15, what="the ten poison messages dead-lettered")
    wait_until(lambda: redis_client.xlen("out") == 2, timeout=10, what="item 10 retried and item 11 handled")
    assert sorted(m["seq"] for m in read_messages(redis_client, "out")) == [10, 11]


def test_a_retry_delay_grows_per_message_and_resets_after_success() -> None:
    schedule = RetrySchedule()
    delays = [schedule.failed("main", "in", "1-0") for _ in range(12)]
    assert delays[:3] == [RETRY_INITIAL, 2 * RETRY_INITIAL, 4 * RETRY_INITIAL]
    assert delays[-1] == RETRY_MAX
    assert schedule.failed("main", "in", "2-0") == RETRY_INITIAL  # another message starts afresh
    schedule.forget("main", "in", ["1-0"])  # a success
    assert schedule.failed("main", "in", "1-0") == RETRY_INITIAL
    assert schedule.failed("main", "in", "3-0", delay=7.0) == 7.0  # Retry(delay=...) is obeyed


def test_a_backlog_of_frames_is_handed_over_in_batches(redis_client, graph_file, start_agent) -> None:
    graph = graph_file(RECORDER)
    write_messages(redis_client, "frames", [{"seq": s, "image": FRAME} for s in range(24)])
    start_agent(graph, "recorder")
    wait_until(lambda: sum(m["size"] for m in read_messages(redis_client, "sizes")) == 24, what="24 frames handled")
    batches = [m.payload for m in read_messages(redis_client, "sizes")]
    assert max(b["size"] for b in batches) == 8
    assert all(b["size"] <= 8 for b in batches)
    assert [s for b in batches for s in b["seqs"]] == list(range(24))  # in order, each once


def test_a_consumer_that_keeps_up_reads_frames_one_at_a_time(redis_client, graph_file, start_agent) -> None:
    graph = graph_file(RECORDER)
    start_agent(graph, "recorder")
    for seq in range(5):
        write_messages(redis_client, "frames", [{"seq": seq, "image": FRAME}])
        wait_until(lambda: redis_client.xlen("sizes") == seq + 1, what=f"frame {seq} handled")
    assert [m["size"] for m in read_messages(redis_client, "sizes")] == [1] * 5
