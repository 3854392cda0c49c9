"""Zero-downtime model updates through the real runner, Redis and command line.

The frame source here is a test agent sending small synthetic frames at a steady
rate, so 2,000 frames take a few seconds and a deploy lands in the middle of them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import redis
from pydantic import BaseModel, ConfigDict

from conftest import caught_up
from graphrun import Agent, Output, codec
from graphrun.cli import main as graphrun
from graphrun.graph import load_graph
from graphrun.runner import AgentRunner
from graphrun_agents.classification.toy_models import brightest_pixel_model
from graphrun_agents.messages import Frame

FRAMES = 2000


class PacedFrames(Agent):
    """Sends ``count`` 8x8 frames at ``rate`` per second; every 3rd has a bright spot."""

    frames = Output(Frame)

    class Params(BaseModel):
        model_config = ConfigDict(extra="forbid")
        count: int = FRAMES
        rate: float = 500.0

    def start(self) -> None:
        self._sent = 0
        self._due = time.monotonic()

    def produce(self) -> None:
        if self._sent >= self.params.count:
            self.wait(0.05)
            return
        if self.wait(max(0.0, self._due - time.monotonic())):
            return
        image = np.zeros((8, 8), np.uint8)
        image[0, 0] = 255 if self._sent % 3 == 0 else 0
        self.frames.send({"image": image, "camera": "front", "part_id": self._sent, "frame": self._sent,
                          "timestamp": time.time(), "pixel_format": "Mono8", "width": 8, "height": 8})
        self._sent += 1
        self._due += 1.0 / self.params.rate


GRAPH = """
name: deploy-test
redis: {{main: {{}}}}
agents:
  source:
    type: test_classification_deploy:PacedFrames
    params: {{count: {count}}}
    outputs: {{frames: {{redis: main, stream: frames, maxlen: 10000}}}}
  cls:
    type: classification
    params:
      model: {model}
      backend: onnxruntime
      check_interval_ms: 5
      batch: {{max_size: 4, max_wait_ms: 2}}
    inputs: {{frames: source.frames}}
    outputs: {{verdicts: {{redis: main, stream: verdicts, maxlen: 10000}}}}
"""


@pytest.fixture
def graph_file(tmp_path: Path) -> Path:
    # Version "1" scores the spot as the 2x2 area average of 255 and three 0s;
    # version "2" adds 0.5: every score tells which version judged it.
    (tmp_path / "v1.onnx").write_bytes(brightest_pixel_model(4, 4, version="1"))
    (tmp_path / "v2.onnx").write_bytes(brightest_pixel_model(4, 4, version="2", offset=0.5))
    path = tmp_path / "graph.yaml"
    path.write_text(GRAPH.format(count=FRAMES, model=tmp_path / "v1.onnx"))
    return path


@pytest.fixture
def running(graph_file: Path, redis_server) -> Iterator[dict]:
    graph = load_graph(graph_file)
    urls = {"main": redis_server.url}
    runners = [AgentRunner(graph, name, redis_urls=urls) for name in ("cls", "source")]
    threads = [threading.Thread(target=r.run, daemon=True) for r in runners]
    for t in threads:
        t.start()
    yield {"urls": urls}
    for r in runners:
        r.request_stop()
    for t in threads:
        t.join(timeout=30)


def verdicts(client: redis.Redis) -> list[dict]:
    return [dict(codec.decode(fields).payload) for _, fields in client.xrange("verdicts")]


def wait_for(condition, what: str, timeout: float = 60.0) -> None:
    """Polls ``condition``; the timeout only stops a hung test, it is not what is tested."""
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.02)


def test_a_deploy_during_2000_frames_switches_versions_once_and_judges_every_frame_once(
    graph_file: Path, running: dict, redis_client: redis.Redis, capsys
):
    redis_option = f"main={running['urls']['main']}"
    wait_for(lambda: redis_client.exists("verdicts") and redis_client.xlen("verdicts") >= 300, "the first verdicts")
    code = graphrun(["model", "deploy", str(graph_file), "cls", str(graph_file.parent / "v2.onnx"), "--version", "2",
                     "--redis", redis_option])
    assert code == 0
    # Every frame sent, read and acknowledged: the agent writes a frame's verdict before its
    # acknowledgement, so no verdict is still to come.
    wait_for(lambda: redis_client.xlen("frames") == FRAMES and caught_up(redis_client, "frames", "cls"),
             f"all {FRAMES} frames judged")

    got = verdicts(redis_client)
    assert sorted(v["part_id"] for v in got) == list(range(FRAMES))  # every frame once, none twice
    versions = [v["model_version"] for v in got]
    switch = versions.index("2")
    assert 0 < switch < FRAMES and versions == ["1"] * switch + ["2"] * (FRAMES - switch)
    for v in got:  # each verdict's score is the one its named version computes: no mixed batches
        spot = 64 / 255 if v["part_id"] % 3 == 0 else 0.0  # area resize rounds 255/4 to 64
        assert v["score"] == pytest.approx(spot + (0.5 if v["model_version"] == "2" else 0.0), abs=1e-6)

    capsys.readouterr()
    assert graphrun(["model", "list", str(graph_file), "--redis", redis_option]) == 0
    listing = capsys.readouterr().out.splitlines()
    rows = {line.split()[1]: line for line in listing[1:]}
    assert set(rows) == {"1", "2"}
    assert "*" in rows["2"].split() and "cls@" in rows["2"]

    assert graphrun(["model", "rollback", str(graph_file), "cls", "--redis", redis_option]) == 0
    assert "rolled back from version 2 to 1" in capsys.readouterr().out
    wait_for(lambda: b'"version": "1"' in b"".join(redis_client.hvals("graphrun:model:cls:running")), "the rollback")


def test_a_model_that_does_not_fit_the_agent_is_refused_before_it_is_stored(
    graph_file: Path, redis_server, redis_client: redis.Redis, capsys
):
    wrong = graph_file.parent / "wrong.onnx"
    wrong.write_bytes(brightest_pixel_model(4, 4, version="3", preprocess={"resize": [8, 8]}))
    code = graphrun(["model", "deploy", str(graph_file), "cls", str(wrong), "--redis", f"main={redis_server.url}"])
    assert code == 1
    assert "preprocess gives height 8" in capsys.readouterr().err
    assert redis_client.exists("graphrun:model:cls:versions") == 0


def test_rollback_without_an_earlier_version_says_so(graph_file: Path, redis_server, capsys):
    code = graphrun(["model", "rollback", str(graph_file), "cls", "--redis", f"main={redis_server.url}"])
    assert code == 1
    assert "agent 'cls' has no earlier version to roll back to (active: none)" in capsys.readouterr().err
