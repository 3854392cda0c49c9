"""graphrun record and replay: a running graph's streams to MCAP and back, byte for byte.

The recordings are checked with the mcap library's own reader, not graphrun's, so they
hold what any MCAP tool will see.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest
import redis
from conftest import wait_until
from graphrun import Agent, Output, codec, locate
from graphrun.cli import main
from graphrun.errors import GraphNotRunning
from graphrun.graph import Graph
from graphrun.recording import ENCODING, unpack_entry
from graphrun.redis_server import RedisServer
from graphrun.runner import AgentRunner
from mcap.reader import make_reader
from pydantic import BaseModel, ConfigDict
from typing_extensions import TypedDict


class Shot(TypedDict):
    seq: int
    image: np.ndarray
    depth: np.ndarray


class ArraySource(Agent):
    """Sends ``count`` images (two arrays of different dtypes and shapes each), one every ``interval`` s."""

    shots = Output(Shot)

    class Params(BaseModel):
        model_config = ConfigDict(extra="forbid")
        count: int = 40
        interval: float = 0.05

    def start(self) -> None:
        self._seq = 0

    def produce(self) -> None:
        if self._seq >= self.params.count:
            self.wait(0.05)
            return
        n = self._seq
        self.shots.send({"seq": n,
                         "image": (np.arange(48 * 64, dtype=np.uint16).reshape(48, 64) * (n + 1)) & 0xFFF,
                         "depth": np.full((3, 5, 2), n / 7, dtype=np.float32)})
        self._seq += 1
        self.wait(self.params.interval)


GRAPH = """\
name: recorded
agents:
  front: {{type: test_record_replay:ArraySource, params: {{count: {count}, interval: {interval}}},
          outputs: {{shots: main:rec.front}}}}
  back: {{type: test_record_replay:ArraySource, params: {{count: {back}, interval: {interval}}},
         outputs: {{shots: main:rec.back}}}}
"""


@pytest.fixture
def target() -> Iterator[RedisServer]:
    """A second, empty Redis: where recordings are replayed."""
    with RedisServer(name="target") as server:
        yield server


def running_graph(graph_file: Callable[..., Graph], start_agent: Callable[..., AgentRunner], url: str, *,
                  count: int, back: int, interval: float) -> Graph:
    graph = graph_file(GRAPH.format(count=count, back=back, interval=interval))
    start_agent(graph, "front")
    start_agent(graph, "back")

    def reported() -> bool:
        try:
            locate.running(graph, {"main": url}).close()
            return True
        except GraphNotRunning:
            return False

    wait_until(reported, what="the agents' first heartbeat")
    return graph


def fields_of(client: redis.Redis, stream: str, after: str = "-") -> list[tuple[bytes, dict[bytes, bytes]]]:
    return client.xrange(stream, min=after)


def recorded(path: Path) -> dict[str, list[tuple[str, dict[bytes, bytes]]]]:
    """Topic -> (entry id, fields) in file order, read with the mcap library."""
    out: dict[str, list[tuple[str, dict[bytes, bytes]]]] = {}
    with open(path, "rb") as file:
        for _, channel, message in make_reader(file).iter_messages(log_time_order=False):
            assert channel.message_encoding == ENCODING
            out.setdefault(channel.topic, []).append(unpack_entry(message.data))
    return out


def record(graph: Graph, url: str, out: Path, *extra: str) -> int:
    return main(["record", graph.file, "--redis", f"main={url}", "-o", str(out), *extra])


def test_a_recording_holds_every_entry_from_its_start_byte_for_byte_and_replays_them_in_order(
        graph_file, start_agent, redis_server, redis_client, target, tmp_path, capsys) -> None:
    graph = running_graph(graph_file, start_agent, redis_server.url, count=40, back=25, interval=0.05)
    out = tmp_path / "line.mcap"
    # The sources need 2 s and 1.25 s: they finish while the recorder runs.
    assert record(graph, redis_server.url, out, "--duration", "3") == 0
    assert "0 trimmed before the recorder read them" in capsys.readouterr().out

    holds = recorded(out)
    assert set(holds) == {"main:rec.front", "main:rec.back"}
    for topic in holds:
        entries = holds[topic]
        assert entries, f"{topic}: nothing recorded"
        stream = topic.partition(":")[2]
        # From the first entry it recorded to the stream's end: every entry, same id, same fields, same order.
        in_redis = fields_of(redis_client, stream, after=entries[0][0])
        assert [(i.decode(), f) for i, f in in_redis] == entries
        assert len(in_redis) >= 5  # most of each source's entries came after the recording began

    # Replayed into an empty Redis: the same bytes, in the same order, under new ids.
    assert main(["replay", str(out), graph.file, "--speed", "0", "--redis", f"main={target.url}"]) == 0
    fresh = redis.Redis.from_url(target.url)
    for topic, entries in holds.items():
        replayed = fields_of(fresh, topic.partition(":")[2])
        assert [f for _, f in replayed] == [f for _, f in entries]
        original, copy = codec.decode(entries[-1][1]), codec.decode(replayed[-1][1])
        assert (copy.id, copy.producer, copy.created) == (original.id, original.producer, original.created)
        assert copy["image"].dtype == np.uint16 and copy["depth"].shape == (3, 5, 2)
        np.testing.assert_array_equal(copy["image"], original["image"])
    fresh.close()


def test_the_mcap_library_lists_one_channel_per_stream_with_the_counts_sent_and_the_graph(
        graph_file, start_agent, redis_server, redis_client, tmp_path) -> None:
    graph = running_graph(graph_file, start_agent, redis_server.url, count=30, back=12, interval=0.04)
    out = tmp_path / "counts.mcap"
    before = {s: len(redis_client.xrange(s)) for s in ("rec.front", "rec.back")}
    assert record(graph, redis_server.url, out, "--duration", "2.5") == 0
    sent = {s: len(redis_client.xrange(s)) - before[s] for s in before}

    with open(out, "rb") as file:
        reader = make_reader(file)
        summary = reader.get_summary()
        metadata = {m.name: m.metadata for m in reader.iter_metadata()}
        attachments = [a.name for a in reader.iter_attachments()]
    assert summary is not None and summary.statistics is not None
    channels = {c.topic: c for c in summary.channels.values()}
    assert set(channels) == {"main:rec.front", "main:rec.back"}
    assert channels["main:rec.front"].metadata["agent"] == "front"
    assert channels["main:rec.front"].metadata["port"] == "shots"
    assert channels["main:rec.front"].metadata["type"] == "test_record_replay.Shot"
    counts = {c.topic: summary.statistics.channel_message_counts.get(i, 0) for i, c in summary.channels.items()}
    # Entries written while the recorder started may fall either side of its start: no more.
    for topic, count in counts.items():
        assert sent[topic.partition(":")[2]] - 2 <= count <= sent[topic.partition(":")[2]]
    assert sum(counts.values()) == summary.statistics.message_count
    assert '"name": "recorded"' in metadata["graphrun.graph"]["graph"]
    assert attachments == ["graph.yaml"]

    # log_time is the entry id's time; publish_time the envelope's origin time.
    with open(out, "rb") as file:
        _, _, message = next(make_reader(file).iter_messages(topics=["main:rec.front"]))
    entry_id, fields = unpack_entry(message.data)
    assert message.log_time // 1_000_000 == int(entry_id.partition("-")[0])
    assert abs(message.publish_time / 1e9 - codec.decode(fields).created) < 1e-3


def test_replay_keeps_the_recorded_timing_at_speed_1_and_drops_it_at_speed_0(
        graph_file, start_agent, redis_server, target, tmp_path) -> None:
    graph = running_graph(graph_file, start_agent, redis_server.url, count=0, back=0, interval=0.3)
    client = redis.Redis.from_url(redis_server.url)
    out = tmp_path / "paced.mcap"
    # Entries written 0.3 s apart while the recorder runs (the agents send nothing here).
    def write() -> None:
        time.sleep(0.5)
        for n in range(6):
            client.xadd("rec.front", {"h": f'{{"n":{n}}}'.encode(), "b0": bytes([n]) * 10})
            time.sleep(0.3)

    writer = threading.Thread(target=write)
    writer.start()
    assert record(graph, redis_server.url, out, "--ports", "front.shots", "--duration", "3") == 0
    writer.join()
    span = 1.5  # five gaps of 0.3 s

    fresh = redis.Redis.from_url(target.url)
    started = time.monotonic()
    assert main(["replay", str(out), graph.file, "--speed", "1", "--redis", f"main={target.url}"]) == 0
    took = time.monotonic() - started
    assert span * 0.9 <= took <= span + 2.0
    ms = [int(i.partition(b"-")[0]) for i, _ in fresh.xrange("rec.front")]
    assert len(ms) == 6
    assert all(0.2 <= (b - a) / 1000 <= 0.6 for a, b in pairwise(ms)), ms

    fresh.delete("rec.front")
    started = time.monotonic()
    assert main(["replay", str(out), graph.file, "--speed", "0", "--redis", f"main={target.url}"]) == 0
    assert time.monotonic() - started < span / 2
    assert [f[b"b0"] for _, f in fresh.xrange("rec.front")] == [bytes([n]) * 10 for n in range(6)]
    fresh.close()
    client.close()


def test_replay_into_another_port_with_ports_recorded_equals_target(
        graph_file, start_agent, redis_server, target, tmp_path) -> None:
    graph = running_graph(graph_file, start_agent, redis_server.url, count=10, back=0, interval=0.02)
    out = tmp_path / "front.mcap"
    assert record(graph, redis_server.url, out, "--ports", "front.shots", "--duration", "1.5") == 0
    assert main(["replay", str(out), graph.file, "--speed", "0", "--ports", "front.shots=back.shots",
                 "--redis", f"main={target.url}"]) == 0
    fresh = redis.Redis.from_url(target.url)
    assert fresh.xlen("rec.front") == 0
    assert [f for _, f in fresh.xrange("rec.back")] == [f for _, f in recorded(out)["main:rec.front"]]
    fresh.close()


def test_record_exits_non_zero_naming_why_when_the_graph_is_not_running(
        graph_file, redis_server, tmp_path, capsys) -> None:
    graph = graph_file(GRAPH.format(count=1, back=1, interval=0.1))
    with RedisServer(name="gone") as gone:
        down = gone.url
    assert main(["record", graph.file, "--redis", f"main={down}", "-o", str(tmp_path / "x.mcap"),
                 "--duration", "1"]) == 1
    assert "is not running: no Redis instance answers" in capsys.readouterr().err

    # Redis answers, but no agent of the graph reports: still not a running graph.
    assert record(graph, redis_server.url, tmp_path / "y.mcap", "--duration", "1") == 1
    assert "no agent has reported" in capsys.readouterr().err
    assert not (tmp_path / "y.mcap").exists()


def test_replay_refuses_a_file_that_is_not_a_recording_and_ports_the_graph_lacks(
        graph_file, start_agent, redis_server, target, tmp_path, capsys) -> None:
    graph = running_graph(graph_file, start_agent, redis_server.url, count=3, back=0, interval=0.02)
    junk = tmp_path / "junk.mcap"
    junk.write_bytes(b"not an mcap file at all")
    assert main(["replay", str(junk), graph.file, "--redis", f"main={target.url}"]) == 1
    assert "not a readable MCAP file" in capsys.readouterr().err

    out = tmp_path / "front.mcap"
    assert record(graph, redis_server.url, out, "--ports", "front.shots", "--duration", "0.5") == 0
    other = graph_file("name: other\nagents:\n  solo: {type: sample_agents:Source, outputs: {items: main:solo}}\n",
                       name="other.yaml")
    assert main(["replay", str(out), other.file, "--speed", "0", "--redis", f"main={target.url}"]) == 1
    assert "no recorded port (front.shots) is a port of graph 'other'" in capsys.readouterr().err
    assert main(["replay", str(out), other.file, "--ports", "front.shots=solo.nope",
                 "--redis", f"main={target.url}"]) == 1
    assert "agent 'solo' has no port 'nope'" in capsys.readouterr().err


def test_a_recording_cut_short_replays_what_it_holds_in_each_stream_s_order(
        graph_file, start_agent, redis_server, target, tmp_path, capsys) -> None:
    graph = running_graph(graph_file, start_agent, redis_server.url, count=40, back=40, interval=0.02)
    out = tmp_path / "whole.mcap"
    assert record(graph, redis_server.url, out, "--duration", "2") == 0
    whole = recorded(out)
    cut = tmp_path / "cut.mcap"  # what a recorder killed midway leaves: no summary, a record cut in two
    cut.write_bytes(out.read_bytes()[: out.stat().st_size * 2 // 3])
    capsys.readouterr()

    assert main(["replay", str(cut), graph.file, "--speed", "0", "--redis", f"main={target.url}"]) == 0
    assert "its recorder was cut short" in capsys.readouterr().err
    fresh = redis.Redis.from_url(target.url)
    got = {topic: [f for _, f in fresh.xrange(topic.partition(":")[2])] for topic in whole}
    fresh.close()
    assert 0 < sum(map(len, got.values())) < sum(map(len, whole.values()))
    for topic, fields in got.items():
        assert fields == [f for _, f in whole[topic]][: len(fields)]


def test_entries_trimmed_before_the_recorder_read_them_are_counted_and_reported(
        graph_file, start_agent, redis_server, tmp_path, capsys) -> None:
    graph = running_graph(graph_file, start_agent, redis_server.url, count=0, back=0, interval=0.1)
    client = redis.Redis.from_url(redis_server.url)

    def write_and_trim() -> None:
        time.sleep(0.5)
        client.xadd("rec.front", {"h": b"{}", "n": b"kept"})
        time.sleep(0.5)
        pipe = client.pipeline(transaction=True)  # written and trimmed at once: no reader can see them
        for n in range(5):
            pipe.xadd("rec.front", {"h": b"{}", "n": str(n).encode()})
        pipe.xtrim("rec.front", maxlen=0)
        pipe.execute()
        client.xadd("rec.front", {"h": b"{}", "n": b"after"})

    writer = threading.Thread(target=write_and_trim)
    writer.start()
    assert record(graph, redis_server.url, tmp_path / "gaps.mcap", "--ports", "front.shots", "--duration", "2") == 0
    writer.join()
    client.close()
    printed = capsys.readouterr()
    assert "main:rec.front: 2 entries, 5 trimmed before the recorder read them" in printed.out
    assert "the recording has gaps" in printed.err
    assert [f[b"n"] for _, f in recorded(tmp_path / "gaps.mcap")["main:rec.front"]] == [b"kept", b"after"]
