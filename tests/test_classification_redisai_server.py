"""The RedisAI backend against a real RedisAI server, when one is given.

RedisAI is no longer maintained and cannot be installed here; set
GRAPHRUN_TEST_REDISAI_URL=redis://host:port to a RedisAI-enabled Redis (1.2.x) to run
these tests. The same synthetic frames are judged by an agent on RedisAI and one on
ONNX Runtime; their scores must agree to within 1e-5.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import redis

from conftest import wait_until
from graphrun import codec
from graphrun.graph import load_graph

from graphrun.testing import running
from graphrun_agents.classification.model import DEFAULT_MODEL, inspect
from graphrun_agents.classification.redisai import RedisAIModel, has_ai_module
from graphrun_agents.classification.toy_models import brightest_pixel_model

URL = os.environ.get("GRAPHRUN_TEST_REDISAI_URL")
pytestmark = pytest.mark.skipif(
    not URL, reason="GRAPHRUN_TEST_REDISAI_URL is not set: no RedisAI server to test against (RedisAI is not installable here)"
)

PARTS = 12

GRAPH = f"""
name: redisai-e2e
redis: {{main: {{}}, inference: {{}}}}
agents:
  cam:
    type: camera
    params: {{source: synthetic, view: front, seed: 11, fps: null, count: {PARTS}}}
    outputs: {{frames: {{redis: main, stream: frames, maxlen: 1000}}}}
  on_redisai:
    type: classification
    params: {{backend: auto, redisai: inference, batch: {{max_size: 4}}}}
    inputs: {{frames: cam.frames}}
    outputs: {{verdicts: {{redis: main, stream: verdicts.redisai}}}}
  on_onnxruntime:
    type: classification
    params: {{backend: onnxruntime, model_updates: false}}
    inputs: {{frames: cam.frames}}
    outputs: {{verdicts: {{redis: main, stream: verdicts.onnxruntime}}}}
"""


@pytest.fixture
def ai() -> redis.Redis:
    client = redis.Redis.from_url(URL)  # type: ignore[arg-type]
    assert has_ai_module(client), f"{URL} has no RedisAI module (MODULE LIST)"
    return client


def test_one_dag_round_trip_scores_like_onnx_runtime_and_leaves_no_keys(ai: redis.Redis):
    blob = brightest_pixel_model(4, 4, version="it")
    model = RedisAIModel(ai, "graphrun:test:brightest", blob, inspect(blob))
    before = set(ai.scan_iter(count=1000))
    batch = np.random.default_rng(0).random((3, 1, 4, 4), dtype=np.float32)
    scores = model.run(batch)
    np.testing.assert_allclose(scores, batch.max(axis=(1, 2, 3)), atol=1e-6)
    assert set(ai.scan_iter(count=1000)) == before
    ai.delete("graphrun:test:brightest")


@pytest.mark.skipif(not DEFAULT_MODEL.is_file(), reason="the shipped model is missing")
def test_the_camera_to_verdict_path_on_redisai_matches_onnx_runtime(tmp_path: Path, redis_server, ai: redis.Redis):
    for key in ai.scan_iter("graphrun:model:on_redisai:*"):  # versions left by an earlier run
        ai.delete(key)
    path = tmp_path / "graph.yaml"
    path.write_text(GRAPH)
    graph = load_graph(path)
    urls = {"main": redis_server.url, "inference": URL}
    client = redis.Redis.from_url(redis_server.url)
    with running(graph, redis_urls=urls):
        wait_until(lambda: all(client.exists(s) and client.xlen(s) >= PARTS for s in ("verdicts.redisai", "verdicts.onnxruntime")), timeout=120, what="the verdicts")
    on_ai = {v["part_id"]: v for v in (codec.decode(f).payload for _, f in client.xrange("verdicts.redisai"))}
    on_ort = {v["part_id"]: v for v in (codec.decode(f).payload for _, f in client.xrange("verdicts.onnxruntime"))}
    assert set(on_ai) == set(on_ort) == set(range(PARTS))
    assert {v["backend"] for v in on_ai.values()} == {"redisai"}
    for part in range(PARTS):
        assert on_ai[part]["score"] == pytest.approx(on_ort[part]["score"], abs=1e-5)
        assert on_ai[part]["defective"] == on_ort[part]["defective"]
