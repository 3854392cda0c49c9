"""Bad messages on an input: dead-lettered on arrival with their reason, never blocking,
delaying or dropping the good ones."""

from __future__ import annotations

import json

import pytest
import redis

from conftest import read_messages, wait_until, write_messages
from graphrun import Message, codec
from graphrun.codec import decode
from graphrun.errors import MessageFormatError
from graphrun.graph import parse_graph
from graphrun.redis_server import RedisServer
from graphrun.testing import running
from graphrun_agents.modbus.regmap import RegisterMap
from graphrun_agents.modbus.simulator import PlcSimulator

RELAY = """\
name: t
agents:
  relay:
    type: sample_agents:Relay
    inputs:
      items: {from: "main:in", max_deliveries: 3}
    outputs: {copies: {stream: out}}
"""


def dead(client: redis.Redis, stream: str = "in:dead") -> list[dict[bytes, bytes]]:
    return [fields for _, fields in client.xrange(stream)]


def test_payload_values_of_the_wrong_type_are_dead_lettered_on_arrival(redis_client, graph_file, start_agent) -> None:
    runner = start_agent(graph_file(RELAY), "relay")
    write_messages(redis_client, "in", [{"seq": 0}, {"seq": "one"}, {"seq": True}, {"other": 3}, {"seq": 4}])
    wait_until(lambda: redis_client.xlen("in:dead") == 3 and redis_client.xlen("out") == 2, what="3 dead, 2 copied")
    assert [m["seq"] for m in read_messages(redis_client, "out")] == [0, 4]
    reasons = [d[b"dl:error"].decode() for d in dead(redis_client)]
    assert reasons == [
        "payload does not fit input 'items': seq: is str ('one'), expected int",
        "payload does not fit input 'items': seq: is bool (True), expected int",
        "payload does not fit input 'items': Item requires key 'seq'",
    ]
    assert runner.counters.failed == 0  # refused before any agent code ran


def test_an_entry_nested_thousands_deep_is_dead_lettered_at_once_with_the_real_error(redis_client, graph_file, start_agent) -> None:
    start_agent(graph_file(RELAY), "relay")
    deep = b'{"v": 1, "id": "a", "t0": 1, "p": {"seq": ' + b"[" * 100_000 + b"]" * 100_000 + b"}}"
    redis_client.xadd("in", {b"h": deep})
    write_messages(redis_client, "in", [{"seq": 1}])
    wait_until(lambda: redis_client.xlen("in:dead") == 1 and redis_client.xlen("out") == 1, what="dead letter and copy")
    [letter] = dead(redis_client)
    assert letter[b"dl:error"].startswith(b"malformed entry: RecursionError")
    # The dead letter keeps an excerpt of the 200 KB header and says how long it was.
    assert len(letter[b"h"]) == 64 << 10
    assert json.loads(letter[b"dl:truncated"]) == {"h": len(deep)}


@pytest.mark.parametrize("shape", ['"1000"', "[-1]", "[2.0]", "[true]", "null"])
def test_an_array_shape_that_is_not_a_list_of_sizes_is_refused(shape: str) -> None:
    header = b'{"v": 1, "id": "a", "t0": 1, "p": {"a": {"__ndarray__": "b0", "dtype": "|u1", "shape": ' + shape.encode() + b"}}}"
    with pytest.raises(MessageFormatError, match="bad shape"):
        decode({b"h": header, b"b0": b"\x00" * 1000})


PLC_GRAPH = """
name: bad-verdicts
redis: {{main: {{url: "{url}"}}}}
agents:
  plc:
    type: modbus
    params: {{host: 127.0.0.1, port: {port}, timeout: 0.2, join_timeout: 30}}
    inputs:
      front: main:verdicts.front
      back: main:verdicts.back
"""


def verdict(part_id: object, view: str, **changes: object) -> dict:
    return {"part_id": part_id, "camera": view, "defective": False, "label": "ok", "score": 0.2, "threshold": 0.5,
            "model": "m", "model_version": "1", "backend": "onnxruntime", "preprocess_ms": 1.0,
            "inference_ms": 1.0, **changes}


def test_a_malformed_verdict_never_blocks_the_plc_writes_of_other_parts() -> None:
    with RedisServer(name="bad-verdicts") as server, PlcSimulator(RegisterMap()) as plc:
        client = redis.Redis.from_url(server.url)
        graph = parse_graph(PLC_GRAPH.format(url=server.url, port=plc.port), "bad-verdicts.yaml")
        sent = {
            "front": [verdict(1, "front"), verdict(2, "front", score="high"), verdict(True, "front"),
                      verdict(3, "front", defective="no"), verdict(4, "front")],
            "back": [verdict(1, "back"), verdict(4, "back")],
        }
        for view, payloads in sent.items():
            for payload in payloads:
                client.xadd(f"verdicts.{view}", codec.encode(Message(payload, producer=view)))
        with running(graph, redis_urls={"main": server.url}):
            wait_until(lambda: len(plc.results) == 2, what="parts 1 and 4 written")
            wait_until(lambda: client.xlen("verdicts.front:dead") == 3, what="three bad verdicts dead-lettered")
        assert [r.values["part_id"] for r in plc.results] == [1, 4]
        reasons = sorted(f[b"dl:error"].decode() for _, f in client.xrange("verdicts.front:dead"))
        assert reasons == [
            "payload does not fit input 'front': defective: is str ('no'), expected bool",
            "payload does not fit input 'front': part_id: is bool (True), expected int",
            "payload does not fit input 'front': score: is str ('high'), expected float",
        ]
