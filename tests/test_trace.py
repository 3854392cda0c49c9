"""``graphrun trace``: the audit trail of one part, read from the index the agents keep.

The line runs for real: synthetic cameras, the shipped model under ONNX Runtime, the
Modbus agent writing to a simulated PLC, all on a real Redis. The index is read with
a fixed number of commands whatever the streams' length, it says when a message has
been trimmed, and its entries expire.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import redis
from conftest import wait_until
from graphrun import codec, index
from graphrun.cli import main
from graphrun.graph import InputBinding, InputSpec, StreamRef, load_graph
from graphrun.health import Counters
from graphrun.outbox import Outbox, Write
from graphrun.redis_server import RedisServer
from graphrun.testing import running
from graphrun_agents.classification.model import DEFAULT_MODEL
from graphrun_agents.modbus.regmap import RegisterMap
from graphrun_agents.modbus.simulator import PlcSimulator

PARTS = 4

LINE = """
name: traced-line
redis: {{main: {{url: "{url}"}}}}
agents:
  cam_front:
    type: camera
    params: {{source: synthetic, view: front, seed: 9, fps: null, count: {parts}}}
    outputs: {{frames: {{stream: cam.front.frames, maxlen: 100}}}}
  cam_back:
    type: camera
    params: {{source: synthetic, view: back, seed: 9, fps: null, count: {parts}}}
    outputs: {{frames: {{stream: cam.back.frames, maxlen: 100}}}}
  cls_front:
    type: classification
    params: {{backend: onnxruntime}}
    inputs: {{frames: cam_front.frames}}
    outputs: {{verdicts: {{stream: cls.front.verdicts}}}}
  cls_back:
    type: classification
    params: {{backend: onnxruntime}}
    inputs: {{frames: cam_back.frames}}
    outputs: {{verdicts: {{stream: cls.back.verdicts}}}}
  plc:
    type: modbus
    params: {{host: 127.0.0.1, port: {plc_port}}}
    inputs: {{front: cls_front.verdicts, back: cls_back.verdicts}}
"""

SOURCE = """
name: counted
redis: {{main: {{url: "{url}"}}}}
agents:
  source:
    type: sample_agents:Source
    params: {{count: {count}}}
    outputs: {{items: {{stream: items, maxlen: 100000, index: seq{extra}}}}}
"""


def trace_json(graph: Path, value: object, capsys: pytest.CaptureFixture[str], *extra: str) -> list[dict[str, Any]]:
    assert main(["trace", str(graph), str(value), "--json", *extra]) == 0
    return json.loads(capsys.readouterr().out)


def entry_of(client: redis.Redis, stream: str, field: str, value: object) -> str:
    """The stream entry whose payload has ``field`` == ``value``, found the slow way (a scan)."""
    found = [i.decode() for i, fields in client.xrange(stream) if codec.decode(fields).payload.get(field) == value]
    assert len(found) == 1, f"{stream}: {len(found)} entries with {field} {value}"
    return found[0]


@pytest.mark.skipif(not DEFAULT_MODEL.is_file(), reason=f"the shipped model {DEFAULT_MODEL} is missing")
def test_a_parts_trace_shows_its_frames_verdicts_model_version_and_plc_write(
    tmp_path: Path, redis_server: RedisServer, capsys: pytest.CaptureFixture[str],
) -> None:
    client = redis.Redis.from_url(redis_server.url)
    path = tmp_path / "line.yaml"
    with PlcSimulator(RegisterMap()) as plc:
        path.write_text(LINE.format(url=redis_server.url, parts=PARTS, plc_port=plc.port))
        with running(load_graph(path), redis_urls={"main": redis_server.url}):
            wait_until(lambda: len(plc.results) >= PARTS, timeout=180, what="every part on the PLC")
            wait_until(lambda: client.exists("traced-line.plc.results") and client.xlen("traced-line.plc.results") >= PARTS,
                       what="every PLC write reported")

    part = 2
    trail = trace_json(path, part, capsys)
    assert [t["written"] for t in trail] == sorted(t["written"] for t in trail)
    by_writer: dict[str, list[dict[str, Any]]] = {}
    for t in trail:
        assert not t["trimmed"]
        assert t["payload"]["part_id"] == part
        by_writer.setdefault(t["writer"], []).append(t)
    assert sorted(by_writer) == ["cam_back.frames", "cam_front.frames", "cls_back.verdicts", "cls_front.verdicts",
                                 "plc.results"]

    for view in ("front", "back"):
        [frame] = by_writer[f"cam_{view}.frames"]
        assert frame["entry_id"] == entry_of(client, f"cam.{view}.frames", "part_id", part)
        assert frame["payload"]["camera"] == f"cam_{view}"
        assert frame["payload"]["image"].startswith("<uint8[")  # described, not dumped
        assert "exposure_us" in frame["payload"] and frame["payload"]["timestamp"] > 0
        [verdict] = by_writer[f"cls_{view}.verdicts"]
        assert verdict["entry_id"] == entry_of(client, f"cls.{view}.verdicts", "part_id", part)
        v = verdict["payload"]
        assert (v["model"], v["model_version"], v["backend"]) == ("finger-follower-defects", "2", "onnxruntime")
        assert 0.0 <= v["score"] <= 1.0 and v["defective"] == (v["score"] >= v["threshold"])
        # The camera made the frame (no trigger here): the verdict's path starts at it.
        assert frame["producer"] == f"cam_{view}" and frame["path"] == []
        assert verdict["created"] == frame["created"]
        [step] = verdict["path"]
        assert step["agent"] == f"cls_{view}" and step["took_ms"] >= 0 and step["waited_ms"] >= 0

    [result] = by_writer["plc.results"]
    r = result["payload"]
    [on_plc] = [p for p in plc.results if p.values["part_id"] == part]
    assert r["sequence"] == on_plc.sequence
    verdicts = by_writer["cls_front.verdicts"] + by_writer["cls_back.verdicts"]
    defective = any(v["payload"]["defective"] for v in verdicts)
    assert r["outcome"] == ("defective" if defective else "ok") and r["missing"] == []
    assert on_plc.values["outcome"] == (1 if defective else 0)
    assert sorted(r["verdicts"]) == sorted(f"{v['stream']} {v['entry_id']}" for v in verdicts)
    assert r["registers"] == [{"table": "holding", "address": 100, "values": [on_plc.sequence, 0, part, int(defective)],
                               "fields": ["sequence", "part_id", "outcome"]}]
    assert [step["agent"] for step in result["path"]] in (["cls_front", "plc"], ["cls_back", "plc"])

    assert main(["trace", str(path), str(part)]) == 0
    text = capsys.readouterr().out
    assert f"part_id {part}: 5 message(s)" in text
    assert "finger-follower-defects" in text and "plc.results" in text and "took" in text


def commands_sent(client: redis.Redis, before: dict[str, Any]) -> dict[str, int]:
    """Calls per command since ``before`` (INFO's own calls left out)."""
    after = client.info("commandstats")
    counts = {name: stats["calls"] - before.get(name, {}).get("calls", 0) for name, stats in after.items()}
    return {name: n for name, n in counts.items() if n and name != "cmdstat_info"}


def test_trace_reads_the_index_with_as_many_commands_on_a_long_stream_and_reports_trimmed_messages(
    tmp_path: Path, redis_server: RedisServer, capsys: pytest.CaptureFixture[str],
) -> None:
    client = redis.Redis.from_url(redis_server.url)
    path = tmp_path / "counted.yaml"
    path.write_text(SOURCE.format(url=redis_server.url, count=20, extra=""))
    with running(load_graph(path), redis_urls={"main": redis_server.url}):
        wait_until(lambda: client.exists("items") and client.xlen("items") >= 20, what="the items")

    def traced() -> tuple[list[dict[str, Any]], dict[str, int]]:
        before = client.info("commandstats")
        trail = trace_json(path, 7, capsys, "--field", "seq")
        return trail, commands_sent(client, before)

    short, short_commands = traced()
    assert [(t["payload"]["seq"], t["writer"], t["entry_id"]) for t in short] == [(7, "source.items", entry_of(client, "items", "seq", 7))]
    assert short_commands["cmdstat_lrange"] == 1 and short_commands["cmdstat_xrange"] == 1
    assert not {"cmdstat_xrevrange", "cmdstat_xread", "cmdstat_scan", "cmdstat_keys"} & set(short_commands)

    pipe = client.pipeline(transaction=False)
    for n in range(20_000):
        pipe.xadd("items", {"h": b"x" * 100})
    pipe.execute()
    long, long_commands = traced()
    assert long == short
    assert long_commands == short_commands

    client.xtrim("items", maxlen=1000)
    trimmed, trimmed_commands = traced()
    assert trimmed_commands == short_commands
    assert [(t["entry_id"], t["trimmed"]) for t in trimmed] == [(short[0]["entry_id"], True)]
    assert main(["trace", str(path), "7", "--field", "seq"]) == 0
    assert "trimmed: no longer in its stream (the stream keeps about 100000 entries)" in capsys.readouterr().out


def test_an_unknown_part_is_said_to_be_unknown_and_exits_non_zero(
    tmp_path: Path, redis_server: RedisServer, capsys: pytest.CaptureFixture[str],
) -> None:
    path = tmp_path / "counted.yaml"
    path.write_text(SOURCE.format(url=redis_server.url, count=3, extra=""))
    client = redis.Redis.from_url(redis_server.url)
    with running(load_graph(path), redis_urls={"main": redis_server.url}):
        wait_until(lambda: client.exists("items") and client.xlen("items") >= 3, what="the items")
    assert main(["trace", str(path), "424242", "--field", "seq"]) == 1
    err = capsys.readouterr().err
    assert "graph 'counted' has no message with seq 424242" in err and "expired" in err


def test_an_index_entry_expires_after_its_ttl(tmp_path: Path, redis_server: RedisServer,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "counted.yaml"
    path.write_text(SOURCE.format(url=redis_server.url, count=3, extra=", index_ttl: 1"))
    client = redis.Redis.from_url(redis_server.url)
    key = index.key("counted", "seq", 1)
    with running(load_graph(path), redis_urls={"main": redis_server.url}):
        wait_until(lambda: client.exists("items") and client.xlen("items") >= 3, what="the items")
        assert 0 < client.pttl(key) <= 1000
    wait_until(lambda: not client.exists(key), timeout=10, what="the index entry to expire")
    assert client.xlen("items") == 3  # the messages stay: only the index forgets them
    assert main(["trace", str(path), "1", "--field", "seq"]) == 1
    assert "no message with seq 1" in capsys.readouterr().err


def test_a_message_an_agent_gave_up_on_is_in_the_trace_with_why(
    tmp_path: Path, redis_server: RedisServer, capsys: pytest.CaptureFixture[str],
) -> None:
    path = tmp_path / "counted.yaml"
    path.write_text(SOURCE.format(url=redis_server.url, count=6, extra="") + """
  relay:
    type: sample_agents:Relay
    params: {reject: [4]}
    inputs: {items: source.items}
    outputs: {copies: {stream: copies, index: seq}}
""")
    client = redis.Redis.from_url(redis_server.url)
    with running(load_graph(path), redis_urls={"main": redis_server.url}):
        wait_until(lambda: client.exists("items:dead") and client.exists("copies") and client.xlen("copies") >= 5,
                   what="five copies and one dead letter")
    [item, dead] = trace_json(path, 4, capsys, "--field", "seq")
    assert (item["writer"], dead["writer"]) == ("source.items", "relay.items (dead letter)")
    assert dead["stream"] == "items:dead" and dead["payload"] == {"seq": 4}
    assert dead["dead_letter"]["error"] == "DeadLetter: item 4 is rejected" and dead["dead_letter"]["agent"] == "relay"
    assert dead["dead_letter"]["id"] == item["entry_id"]
    assert [t["writer"] for t in trace_json(path, 3, capsys, "--field", "seq")] == ["source.items", "relay.copies"]
    assert main(["trace", str(path), "4", "--field", "seq"]) == 0
    assert "dead letter: DeadLetter: item 4 is rejected (agent relay)" in capsys.readouterr().out


def test_an_output_whose_index_is_null_is_not_indexed(tmp_path: Path, redis_server: RedisServer) -> None:
    path = tmp_path / "counted.yaml"
    path.write_text(SOURCE.format(url=redis_server.url, count=3, extra="").replace("index: seq", "index: null"))
    client = redis.Redis.from_url(redis_server.url)
    with running(load_graph(path), redis_urls={"main": redis_server.url}):
        wait_until(lambda: client.exists("items") and client.xlen("items") >= 3, what="the items")
    assert list(client.scan_iter(f"{index.PREFIX}*")) == []


def test_index_entries_go_with_the_acknowledgements_and_a_full_redis_gets_neither(redis_server: RedisServer) -> None:
    """The index names the entry ids Redis gave, so it is written after the outputs, in the
    acknowledgements' transaction: a Redis that refuses the outputs gets no index entry
    and no acknowledgement; once it has room, outputs, index and acknowledgement land."""
    client = redis.Redis.from_url(redis_server.url)
    client.xgroup_create("in", "group", id="0", mkstream=True)
    client.xadd("in", {"h": b"{}"})
    [[_, [(entry_id, _)]]] = client.xreadgroup("group", "c", {"in": ">"})
    binding = InputBinding("in", StreamRef("main", "in"), InputSpec.model_validate({"from": "main:in"}), None)
    outbox = Outbox({"main": client}, "group", Counters())
    key = index.key("g", "part_id", 1)
    fields = {b"h": b"{}"}
    outbox.commit([Write("main", "a", 10, fields, index_key=key), Write("main", "b", 10, fields, index_key=key)],
                  {binding: [entry_id.decode()]})
    client.config_set("maxmemory", 1)
    try:
        with pytest.raises(redis.exceptions.OutOfMemoryError):
            outbox.flush()
        assert not client.exists("a", "b", key)
        assert client.xpending("in", "group")["pending"] == 1
    finally:
        client.config_set("maxmemory", 0)
    outbox.flush()  # kept, written once Redis has room
    a, b = client.xrange("a")[0][0].decode(), client.xrange("b")[0][0].decode()
    assert [e.decode() for e in client.lrange(key, 0, -1)] == [f"a {a}", f"b {b}"]
    assert 0 < client.ttl(key) <= index.DEFAULT_TTL
    assert client.xpending("in", "group")["pending"] == 0
