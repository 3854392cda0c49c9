"""Frames through Redis and through shared memory: the same agents and graphs, the same
result, nothing lost and no wrong pixel. Real redis-server, agents as threads or processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import redis
from conftest import TESTS, caught_up, read_messages, wait_until
from frame_agents import pixels
from graphrun import frame_store, index
from graphrun.codec import decode, encode
from graphrun.frame_path import store_name
from graphrun.frame_store import FrameStore
from graphrun.message import Message
from graphrun.redis_server import RedisServer
from graphrun.transport import ensure_group

# 8 slots of 128 KiB; a frame of 256x320 mono8 is 80 KiB.
STORE = "frame_store: {size: 1mb, slot_size: 128kb, threshold: 1kb}"

PAIR = """\
name: {name}
redis: {{main: {{{store}}}}}
agents:
  source:
    type: frame_agents:FrameSource
    params: {{count: {count}, first: {first}}}
    outputs: {{frames: {{stream: frames, maxlen: 100000}}}}
  check:
    type: frame_agents:FrameCheck
    params: {{delay_ms: {delay}}}
    inputs: {{frames: {{from: source.frames, claim_idle_ms: 500, batch: 4}}}}
    outputs: {{verdicts: {{stream: verdicts, maxlen: 100000}}}}
"""


@pytest.fixture(autouse=True)
def _stores_removed(redis_server: RedisServer) -> Iterator[None]:
    """Each test's frame stores (one per graph and Redis server) are removed afterwards."""
    yield
    for graph in ("frames", "fanout"):
        frame_store.remove(frame_store.DIRECTORY / store_name(graph, "main", redis_server.url))


@pytest.fixture(params=["redis", "shared memory"])
def frame_path(request) -> str:
    """The graph's Redis instance setting: frames inline (today's path) or through a frame store."""
    return "" if request.param == "redis" else STORE


def verdicts(client: redis.Redis, stream: str = "verdicts") -> dict[int, bool]:
    """seq -> whether every delivery of that frame had the right pixels."""
    out: dict[int, bool] = {}
    for m in read_messages(client, stream):
        out[m["seq"]] = out.get(m["seq"], True) and m["right"]
    return out


def record(client: redis.Redis, graph: str, agent: str) -> dict:
    raw = client.hget(f"graphrun:health:{graph}:{agent}", f"{agent}-0")
    return json.loads(raw) if raw else {}


def entry_sizes(client: redis.Redis, stream: str) -> list[int]:
    return [sum(len(v) for v in fields.values()) for _, fields in client.xrange(stream)]


def test_every_frame_arrives_with_its_pixels_on_both_paths(frame_path, redis_client, graph_file, start_agent) -> None:
    graph = graph_file(PAIR.format(name="frames", store=frame_path, count=100, first=0, delay=0))
    start_agent(graph, "check", health_interval=0.1)
    source = start_agent(graph, "source", health_interval=0.1)
    wait_until(lambda: redis_client.xlen("verdicts") >= 100, what="100 verdicts")
    assert verdicts(redis_client) == {seq: True for seq in range(100)}
    assert redis_client.xlen("frames:dead") == 0
    # An observer on this host sees the same pixels (of the latest frames: older slots are reused).
    seen = [decode(fields) for _, fields in redis_client.xrevrange("frames", count=3)]
    assert all((m["image"] == pixels(m["seq"])).all() for m in seen)
    shared = frame_path != ""
    # 100 frames through 8 slots: slots are reused once the reader is done with them (a frame
    # that came while the reader had all 8 in hand went inline).
    assert source.counters.frames_shared + source.counters.frames_inline == (100 if shared else 0)
    assert (source.counters.frames_shared > 8) is shared
    # A frame through shared memory leaves an entry of a few hundred bytes in Redis.
    assert sum(size < 2_000 for size in entry_sizes(redis_client, "frames")) == source.counters.frames_shared


def test_three_readers_each_get_every_frame_right(frame_path, redis_client, graph_file, start_agent) -> None:
    readers = "\n".join(f"""\
  check{i}:
    type: frame_agents:FrameCheck
    params: {{delay_ms: {i * 3}}}
    inputs: {{frames: {{from: source.frames, batch: 4}}}}
    outputs: {{verdicts: main:verdicts{i}}}""" for i in range(3))
    graph = graph_file(f"""\
name: fanout
redis: {{main: {{{frame_path}}}}}
agents:
  source: {{type: frame_agents:FrameSource, params: {{count: 60}}, outputs: {{frames: main:frames}}}}
{readers}
""")
    for i in range(3):
        start_agent(graph, f"check{i}")
    source = start_agent(graph, "source")
    for i in range(3):
        wait_until(lambda i=i: redis_client.xlen(f"verdicts{i}") >= 60, what=f"reader {i}'s verdicts")
        assert verdicts(redis_client, f"verdicts{i}") == {seq: True for seq in range(60)}
    # The slowest reader holds the slots: what did not fit went inline, nothing was lost.
    assert source.counters.frames_shared + source.counters.frames_inline == (60 if frame_path else 0)


def test_a_slow_reader_makes_a_full_store_send_inline_and_loses_nothing(frame_path, redis_client, graph_file,
                                                                        start_agent) -> None:
    graph = graph_file(PAIR.format(name="frames", store=frame_path, count=60, first=0, delay=20))
    check = start_agent(graph, "check", health_interval=0.1)
    wait_until(lambda: redis_client.exists("frames"), what="the reader's group")
    source = start_agent(graph, "source", health_interval=0.1)
    wait_until(lambda: redis_client.xlen("verdicts") >= 60, what="60 verdicts")
    assert verdicts(redis_client) == {seq: True for seq in range(60)}
    assert check.counters.dead_lettered == 0
    if frame_path:
        assert source.counters.frames_inline > 0, "the slow reader should have filled the 8 slots"
        assert source.counters.frames_shared >= 8
        wait_until(lambda: record(redis_client, "frames", "source").get("frames_inline") == source.counters.frames_inline,
                   what="the fallback counted in the health record")


def test_a_reader_that_finds_its_slot_reused_dead_letters_the_frame_and_counts_it(redis_server, redis_client,
                                                                                  graph_file, start_agent) -> None:
    graph = graph_file(PAIR.format(name="frames", store=STORE, count=0, first=0, delay=0))
    store = FrameStore.create(store_name("frames", "main", redis_server.url), size=1 << 20, slot_size=128 << 10)
    try:
        ensure_group(redis_client, "frames", "check")

        class Sink:  # the producer's side, by hand, so that the slot can be reused behind the entry
            threshold = 1024

            def put(self, data):
                self.ref = store.put(data)
                return self.ref

        sink = Sink()
        redis_client.xadd("frames", encode(Message({"seq": 1, "part_id": 41, "image": pixels(1)}), sink))
        assert store.release(sink.ref)  # freed although pending: what the reuse rule prevents
        while (reused := store.put(pixels(99).tobytes())) is not None and reused.slot != sink.ref.slot:
            pass
        assert reused is not None, "the slot should have been taken again"
        redis_client.xadd("frames", encode(Message({"seq": 2, "image": pixels(2)}), sink))
        check = start_agent(graph, "check", health_interval=0.1)
        wait_until(lambda: redis_client.xlen("verdicts") >= 1 and redis_client.xlen("frames:dead") >= 1,
                   what="one verdict and one dead letter")
        assert verdicts(redis_client) == {2: True}  # the reused frame was never handed on
        [(_, dead)] = redis_client.xrange("frames:dead")
        assert b"was reused: generation" in dead[b"dl:error"]
        # The dead letter is indexed by its part, as any other: `graphrun trace` shows it with why.
        assert [e.decode() for e in redis_client.lrange(index.key("frames", "part_id", 41), 0, -1)] == [
            f"frames:dead {redis_client.xrange('frames:dead')[0][0].decode()}"]
        assert check.counters.frames_unavailable == 1
        wait_until(lambda: record(redis_client, "frames", "check").get("frames_unavailable") == 1,
                   what="the health record counting it")
    finally:
        frame_store.remove(store.path)


def reader_process(graph: Path, url: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(TESTS)}
    return subprocess.Popen([sys.executable, "-m", "graphrun", "agent", str(graph), "check", "--replica", "0",
                             "--redis", f"main={url}"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def test_a_killed_reader_restarted_rereads_its_pending_frames_from_their_slots(
        frame_path, redis_server, redis_client, tmp_path: Path, start_agent, graph_file) -> None:
    text = PAIR.format(name="frames", store=frame_path, count=150, first=0, delay=15)
    path = tmp_path / "frames.yaml"
    path.write_text(text)
    first = reader_process(path, redis_server.url)
    try:
        wait_until(lambda: redis_client.exists("frames"), timeout=60, what="the reader's group")
        start_agent(graph_file(text), "source")
        wait_until(lambda: redis_client.xlen("verdicts") >= 20 and redis_client.xpending("frames", "check")["pending"] > 0,
                   timeout=60, what="20 verdicts, with frames in hand")
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    assert redis_client.xlen("verdicts") < 150, "the reader finished before it could be killed"
    assert redis_client.xpending("frames", "check")["pending"] > 0
    second = reader_process(path, redis_server.url)
    try:
        wait_until(lambda: redis_client.xlen("frames") == 150 and caught_up(redis_client, "frames", "check"),
                   timeout=120, what="the rest of the frames")
    finally:
        second.terminate()
        assert second.wait(20) == 0
    assert verdicts(redis_client) == {seq: True for seq in range(150)}
    assert redis_client.xlen("frames:dead") == 0


def test_a_restarted_producer_keeps_the_slots_of_frames_still_unread(frame_path, redis_client, graph_file,
                                                                    start_agent) -> None:
    text = lambda first: PAIR.format(name="frames", store=frame_path, count=20, first=first, delay=0)
    ensure_group(redis_client, "frames", "check")  # the reader exists, but is not running yet
    before = start_agent(graph_file(text(0), "before.yaml"), "source")
    wait_until(lambda: redis_client.xlen("frames") >= 20, what="the first producer's 20 frames")
    before.request_stop()
    after = start_agent(graph_file(text(20), "after.yaml"), "source")
    wait_until(lambda: redis_client.xlen("frames") >= 40, what="the second producer's 20 frames")
    if frame_path:  # the second producer found the 8 slots pending and did not take them
        assert (before.counters.frames_shared, after.counters.frames_shared) == (8, 0)
    start_agent(graph_file(text(0), "reader.yaml"), "check")
    wait_until(lambda: redis_client.xlen("verdicts") >= 40, what="40 verdicts")
    assert verdicts(redis_client) == {seq: True for seq in range(40)}
    assert redis_client.xlen("frames:dead") == 0


assert Callable  # (typing only)


def test_a_recording_holds_the_frames_themselves_not_references_to_slots(redis_server, redis_client, graph_file,
                                                                         start_agent, tmp_path: Path) -> None:
    from graphrun.cli import main
    from graphrun.recording import open_recording

    roomy = STORE.replace("size: 1mb", "size: 8mb")  # 64 slots: none is reused during the test
    graph = graph_file(PAIR.format(name="frames", store=roomy, count=40, first=0, delay=0).replace(
        "params: {count: 40, first: 0}", "params: {count: 40, first: 0, every_ms: 100}"))
    source = start_agent(graph, "source", health_interval=0.1)
    out = tmp_path / "frames.mcap"
    wait_until(lambda: redis_client.exists("graphrun:health:frames:source"), what="the source's heartbeat")
    assert main(["record", graph.file, "--redis", f"main={redis_server.url}", "-o", str(out), "--duration", "2"]) == 0
    assert source.counters.frames_inline == 0
    path = frame_store.DIRECTORY / store_name("frames", "main", redis_server.url)
    frame_store.remove(path)  # the recording must not need the store
    entries = [e for e in open_recording(out).entries() if e.channel.topic == "main:frames"]
    assert len(entries) >= 5
    assert not any(b'"shm"' in e.fields[b"h"] for e in entries)
    assert all((m["image"] == pixels(m["seq"])).all() for m in (decode(e.fields) for e in entries))


def test_a_full_store_whose_redis_does_not_answer_sends_the_frame_inline_instead_of_failing(
        redis_server, redis_client, graph_file) -> None:
    from graphrun.frame_path import FrameOutput, Recycler
    from graphrun.health import Counters
    from graphrun.transport import connect

    graph = graph_file(PAIR.format(name="frames", store=STORE, count=0, first=0, delay=0))
    spec = graph.redis["main"].frame_store
    store = FrameStore.create(store_name("frames", "main", redis_server.url), size=spec.size, slot_size=spec.slot_size)
    try:
        counters = Counters()
        recycler = Recycler(store, connect(redis_server.url), stale_after=30.0, idle=lambda: True)
        output = FrameOutput(graph.agents["source"].outputs["frames"], spec, recycler, counters)
        ensure_group(redis_client, "frames", "check")  # a reader that has read nothing yet
        frame = memoryview(pixels(0).reshape(-1))
        while (ref := output.put(frame)) is not None:  # fill the store with frames of unread entries
            store.record(ref, "frames", redis_client.xadd("frames", {"x": 1}).decode())
        redis_server.stop()  # the full store asks Redis which slots are done with: no answer
        time.sleep(0.05)  # (past the interval between two looks)
        assert output.put(frame) is None  # inline, not an exception in the agent's send
        assert (counters.frames_shared, counters.frames_inline) == (store.slots, 2)
    finally:
        frame_store.remove(store.path)


def test_echo_shows_a_message_whose_frame_is_gone_with_its_fields_and_why(redis_server, redis_client,
                                                                          graph_file) -> None:
    from graphrun.summary import entry_line

    store = FrameStore.create(store_name("frames", "main", redis_server.url), size=1 << 20, slot_size=128 << 10)

    class Sink:
        threshold = 1024

        def put(self, data):
            self.ref = store.put(data)
            return self.ref

    sink = Sink()
    redis_client.xadd("frames", encode(Message({"seq": 5, "image": pixels(5)}, producer="cam"), sink))
    [(entry_id, fields)] = redis_client.xrange("frames")
    shown = entry_line(entry_id.decode(), fields)
    assert '"seq": 5' in shown and "<uint8[256x320] " in shown and "not here" not in shown  # read from its slot
    assert store.release(sink.ref)
    while (again := store.put(b"other")) is not None and again.slot != sink.ref.slot:
        pass
    shown = entry_line(entry_id.decode(), fields)
    assert shown.startswith(f"{entry_id.decode()} cam age ")  # still the message, not "malformed"
    assert '"seq": 5' in shown
    assert "<uint8[256x320] not here: slot 0 of" in shown and "was reused" in shown


def test_slots_a_killed_producer_took_are_back_in_use_after_the_readers_claim_timeout(
        redis_server, redis_client, graph_file, start_agent) -> None:
    graph = graph_file(PAIR.format(name="frames", store=STORE, count=100, first=0, delay=0).replace(
        "params: {count: 100, first: 0}", "params: {count: 100, first: 0, every_ms: 20}"))  # 2 s of frames
    spec = graph.redis["main"].frame_store
    store = FrameStore.create(store_name("frames", "main", redis_server.url), size=spec.size, slot_size=spec.slot_size)
    # A producer that took three slots and was killed before it wrote their entries.
    code = ("import time; from graphrun.frame_store import FrameStore; "
            f"s = FrameStore({str(store.path)!r}, writable=True); [s.put(bytes(1000)) for _ in range(3)]; "
            "print('taken', flush=True); time.sleep(60)")
    producer = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert producer.stdout is not None and producer.stdout.readline().strip() == "taken"
    producer.send_signal(signal.SIGKILL)
    producer.wait()
    killed = time.monotonic()
    assert store.usage()["taken"] == 3
    start_agent(graph, "check")
    wait_until(lambda: redis_client.exists("frames"), what="the reader's group")
    start_agent(graph, "source")
    # The readers' claim_idle_ms is 500 ms: then the three slots are freed and used again.
    wait_until(lambda: store.usage()["taken"] == 0, what="the dead producer's slots freed")
    assert time.monotonic() - killed >= 0.5
    wait_until(lambda: redis_client.xlen("verdicts") >= 100, what="100 verdicts")
    assert verdicts(redis_client) == {seq: True for seq in range(100)}


def test_frames_an_agent_keeps_after_acknowledging_them_keep_their_pixels(frame_path, redis_client, graph_file,
                                                                          start_agent) -> None:
    graph = graph_file(f"""\
name: frames
redis: {{main: {{{frame_path}}}}}
agents:
  source: {{type: frame_agents:FrameSource, params: {{count: 40, every_ms: 5}}, outputs: {{frames: main:frames}}}}
  keeper: {{type: frame_agents:FrameKeeper, inputs: {{frames: source.frames}}}}
""")
    keeper = start_agent(graph, "keeper")
    wait_until(lambda: redis_client.exists("frames"), what="the keeper's group")
    source = start_agent(graph, "source")
    wait_until(lambda: caught_up(redis_client, "frames", "keeper") and redis_client.xlen("frames") == 40,
               what="the keeper to acknowledge 40 frames")
    kept = keeper.agent.kept  # type: ignore[attr-defined]
    assert [seq for seq, _ in kept] == list(range(40))
    # Acknowledged, yet the 8 slots under the kept arrays were not reused: later frames went inline.
    assert [seq for seq, image in kept if not np.array_equal(image, pixels(seq))] == []
    if frame_path:
        assert source.counters.frames_shared == 8 and source.counters.frames_inline == 32
