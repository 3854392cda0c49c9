"""The archive beside the real PLC agent: what it keeps is exactly what the PLC was told to reject.

The Modbus agent writes to a real pymodbus server (the PLC simulator) and sends its
results; the archive joins them with the frames and verdicts the test writes, as the
cameras and classifiers of the finger-follower line would.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from archive_parts import FRAMES, STREAMS, VERDICTS, frame, send, verdict, write_part
from conftest import caught_up, read_messages, wait_until

from graphrun.graph import load_graph
from graphrun.redis_server import RedisServer
from graphrun.testing import running
from graphrun_agents.archive.index import Index
from graphrun_agents.modbus.regmap import RegisterMap
from graphrun_agents.modbus.simulator import PlcSimulator

GRAPH = """\
name: archive_line
agents:
  plc:
    type: modbus
    params: {{host: 127.0.0.1, port: {port}, join_timeout: 1.0}}
    inputs: {{v_front: "main:verdicts.front", v_back: "main:verdicts.back"}}
    outputs: {{results: {{stream: plc.results}}}}
  archive:
    type: archive
    params: {{directory: "{directory}", join_timeout: 5.0}}
    inputs:
      frames: {{front: "main:frames.front", back: "main:frames.back"}}
      verdicts: {{v_front: "main:verdicts.front", v_back: "main:verdicts.back"}}
      results: plc.results
"""

#: part id -> (front label, back label); "ok" passes.
PARTS = {1: ("ok", "ok"), 2: ("crack", "ok"), 3: ("ok", "ok"), 4: ("ok", "chip"), 5: ("scratch", "pitting"),
         6: ("ok", "ok"), 7: ("ok", "ok"), 8: ("crack", "ok"), 9: ("ok", "ok"), 10: ("ok", "ok")}


@pytest.fixture
def plc() -> Iterator[PlcSimulator]:
    with PlcSimulator(RegisterMap()) as sim:
        yield sim


def test_the_archive_holds_exactly_the_parts_the_plc_was_told_to_reject(
        redis_server: RedisServer, redis_client: redis.Redis, plc: PlcSimulator, tmp_path: Path) -> None:
    graph_file = tmp_path / "line.yaml"
    graph_file.write_text(GRAPH.format(port=plc.port, directory=tmp_path / "archive"))
    graph = load_graph(graph_file)
    with running(graph, redis_urls={"main": redis_server.url}):
        for part_id, (front, back) in PARTS.items():
            write_part(redis_client, part_id, front=front, back=back, with_result=False)
        # Part 11 loses its back verdict: the PLC agent writes it incomplete, and the archive keeps it.
        created = time.time()
        for camera, stream in FRAMES.items():
            send(redis_client, stream, frame(11, camera), created)
        send(redis_client, VERDICTS["v_front"], verdict(11, "front"), created)

        def settled() -> bool:
            return redis_client.xlen("plc.results") == 11 and all(
                caught_up(redis_client, s, "archive") for s in STREAMS if redis_client.xlen(s))

        wait_until(settled, timeout=60, what="every part written to the PLC and settled by the archive")

    told = {m["part_id"]: m["outcome"] for m in read_messages(redis_client, "plc.results")}
    rejected = sorted(p for p, outcome in told.items() if outcome != "ok")
    assert rejected == [2, 4, 5, 8, 11] and told[11] == "incomplete"
    index = Index(tmp_path / "archive", readonly=True)
    try:
        kept = index.query()
    finally:
        index.close()
    assert sorted(e.part_id for e in kept) == rejected
    for entry in kept:
        assert entry.plc_sequence is not None and entry.outcome == told[entry.part_id]
        assert sorted(entry.record["frames"]) == ["back", "front"]
    incomplete = next(e for e in kept if e.part_id == 11)
    assert incomplete.record["missing"] == ["verdict:v_back"]
