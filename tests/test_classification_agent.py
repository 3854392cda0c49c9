"""The classification agent on the test harness, with small ONNX models built in the test.

The model scores a frame by its brightest pixel after pre-processing, so the expected
verdict of every frame can be worked out by hand.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import redis
from pydantic import ValidationError

from graphrun import DeadLetter
from graphrun.testing import AgentHarness
from graphrun_agents.classification.agent import ClassificationAgent
from graphrun_agents.classification.toy_models import brightest_pixel_model
from graphrun_agents.classification.versions import ModelVersions
from graphrun_agents.errors import PreprocessConfigError

VERDICT_KEYS = {
    "part_id", "camera", "defective", "label", "score", "threshold", "model", "model_version",
    "backend", "preprocess_ms", "inference_ms",
}


@pytest.fixture
def model_file(tmp_path: Path) -> Path:
    path = tmp_path / "bright.onnx"
    path.write_bytes(brightest_pixel_model(4, 4, threshold=0.5, version="1"))
    return path


def frame(part_id: int, peak: int = 0, *, size: tuple[int, int] = (8, 8), camera: str = "front", **extra) -> dict:
    """A mono frame whose 2x2 block at the top left averages to ``peak`` after a 2x downscale."""
    image = np.zeros(size, np.uint8)
    image[:2, :2] = peak
    return {"image": image, "camera": camera, "part_id": part_id, "frame": part_id, "timestamp": 0.0,
            "pixel_format": "Mono8", "width": size[1], "height": size[0], **extra}


def test_a_frame_with_a_bright_spot_gets_a_defective_verdict_naming_the_model(model_file: Path):
    with AgentHarness(ClassificationAgent, params={"model": str(model_file), "backend": "onnxruntime"}) as h:
        h.send("frames", frame(7, peak=204))
        h.send("frames", frame(8, peak=51, camera="back"))
        bad, good = h.take("verdicts")
    assert set(bad) == VERDICT_KEYS
    assert bad["part_id"] == 7 and bad["camera"] == "front"
    assert bad["defective"] is True and bad["label"] == "defect"
    assert bad["score"] == pytest.approx(0.8, abs=1e-6)
    assert (bad["threshold"], bad["model"], bad["model_version"], bad["backend"]) == (0.5, "brightest-pixel", "1", "onnxruntime")
    assert good["defective"] is False and good["label"] == "ok" and good["camera"] == "back"
    assert good["score"] == pytest.approx(0.2, abs=1e-6)


def test_the_graph_threshold_overrides_the_models(model_file: Path):
    params = {"model": str(model_file), "backend": "onnxruntime", "threshold": 0.1}
    with AgentHarness(ClassificationAgent, params=params) as h:
        h.send("frames", frame(1, peak=51))
        [verdict] = h.take("verdicts")
    assert verdict["defective"] is True and verdict["threshold"] == 0.1


def test_the_frames_ground_truth_travels_with_the_verdict(model_file: Path):
    truth = {"defective": True, "label": "scratch", "defects": [], "distractors": []}
    with AgentHarness(ClassificationAgent, params={"model": str(model_file)}) as h:
        h.send("frames", frame(1, peak=255, truth=truth))
        [verdict] = h.take("verdicts")
    assert verdict["truth"] == truth


def test_a_frame_the_model_cannot_take_goes_to_the_dead_letter_stream(model_file: Path):
    with AgentHarness(ClassificationAgent, params={"model": str(model_file), "preprocess": {"roi": [0, 0, 16, 16]}}) as h:
        with pytest.raises(DeadLetter, match=r"part 3 from 'front'.*roi \[0, 0, 16, 16\] does not fit in a 8x8 frame"):
            h.send("frames", frame(3))
        bad = frame(4)
        bad["image"] = np.zeros((8, 8, 2), np.uint8)
        with pytest.raises(DeadLetter, match=r"shape \[8, 8, 2\]"):
            h.send("frames", bad)
        assert h.take("verdicts") == []


def test_a_frame_of_the_wrong_size_for_a_model_without_resize_is_dead_lettered(tmp_path: Path):
    path = tmp_path / "m.onnx"
    path.write_bytes(brightest_pixel_model(4, 4, preprocess={"scale": 1 / 255}))
    with AgentHarness(ClassificationAgent, params={"model": str(path)}) as h:
        with pytest.raises(DeadLetter, match=r"is 8x8 after pre-processing; model brightest-pixel v1 takes 4x4"):
            h.send("frames", frame(1))


def test_a_micro_batch_waits_until_full_then_judges_in_order_and_releases_the_held_frames(model_file: Path):
    params = {"model": str(model_file), "batch": {"max_size": 3, "max_wait_ms": 10_000}}
    with AgentHarness(ClassificationAgent, params=params) as h:
        first = h.send("frames", frame(1, peak=255))
        second = h.send("frames", frame(2))
        assert h.take("verdicts") == []
        assert [m.id for m in h.held] == [first.id, second.id]
        h.tick()  # the wait is not over: still nothing
        assert h.take("verdicts") == []
        h.send("frames", frame(3, peak=255))
        verdicts = h.take("verdicts")
    assert [v["part_id"] for v in verdicts] == [1, 2, 3]
    assert [v["defective"] for v in verdicts] == [True, False, True]
    assert h.held == [] and [m.id for m in h.released] == [first.id, second.id]


def test_a_partial_batch_is_judged_once_its_wait_is_over(model_file: Path):
    params = {"model": str(model_file), "batch": {"max_size": 8, "max_wait_ms": 1}}
    with AgentHarness(ClassificationAgent, params=params) as h:
        h.send("frames", frame(1))
        while h.held:
            h.tick()
        assert [v["part_id"] for v in h.take("verdicts")] == [1]


def test_without_a_wait_one_read_is_judged_as_one_batch(model_file: Path):
    params = {"model": str(model_file), "batch": {"max_size": 8}}
    with AgentHarness(ClassificationAgent, params=params) as h:
        messages = [h.message("frames", frame(i, peak=255 * (i % 2))) for i in range(5)]
        h.deliver(messages)
        verdicts = h.take("verdicts")
    assert [v["part_id"] for v in verdicts] == [0, 1, 2, 3, 4]
    assert [v["defective"] for v in verdicts] == [False, True, False, True, False]
    assert len({v["inference_ms"] for v in verdicts}) == 1  # one inference call
    assert h.held == [] and h.released == []  # judged within the read: acknowledged as usual


def test_a_model_frozen_to_batch_one_still_takes_micro_batches(tmp_path: Path):
    path = tmp_path / "b1.onnx"
    path.write_bytes(brightest_pixel_model(4, 4, batch=1))
    with AgentHarness(ClassificationAgent, params={"model": str(path), "batch": {"max_size": 3}}) as h:
        h.deliver([h.message("frames", frame(i, peak=255 * (i == 1))) for i in range(3)])
        assert [v["defective"] for v in h.take("verdicts")] == [False, True, False]


def test_a_preprocess_spec_that_does_not_fit_the_model_stops_the_agent_at_start(model_file: Path):
    with pytest.raises(PreprocessConfigError, match=r"resize \[8, 8\].*takes 4"):
        with AgentHarness(ClassificationAgent, params={"model": str(model_file), "preprocess": {"resize": [8, 8]}}):
            pass


def test_bad_params_name_the_field():
    with pytest.raises(ValidationError, match="needs params.redisai"):
        AgentHarness(ClassificationAgent, params={"backend": "redisai"})
    with pytest.raises(ValidationError, match=r"unknown pre-processing field\(s\) \['size'\]"):
        AgentHarness(ClassificationAgent, params={"preprocess": {"size": [4, 4]}})
    with pytest.raises(ValidationError, match="backend"):
        AgentHarness(ClassificationAgent, params={"backend": "tensorflow"})


def test_auto_picks_onnx_runtime_on_a_redis_without_the_ai_module(model_file: Path, redis_client: redis.Redis, caplog):
    caplog.set_level(logging.INFO)
    params = {"model": str(model_file), "redisai": "inference"}
    with AgentHarness(ClassificationAgent, params=params, redis={"inference": redis_client}) as h:
        h.send("frames", frame(1))
        [verdict] = h.take("verdicts")
    assert verdict["backend"] == "onnxruntime"
    assert "instance 'inference' has no 'ai' module (MODULE LIST)" in caplog.text


def test_a_deployed_version_takes_over_between_two_frames_and_a_rollback_restores_the_first(
    model_file: Path, redis_client: redis.Redis
):
    params = {"model": str(model_file), "check_interval_ms": 0.001}
    with AgentHarness(ClassificationAgent, params=params, name="cls", redis={"main": redis_client}) as h:
        h.send("frames", frame(1, peak=51))
        store = ModelVersions(redis_client, "cls")
        assert store.active() == "1"  # the model file was registered as the first version
        v2 = brightest_pixel_model(4, 4, version="2", offset=0.5)
        store.add(v2, version="2", name="brightest-pixel", sha256="v2")
        h.send("frames", frame(2, peak=51))
        store.rollback()
        h.send("frames", frame(3, peak=51))
        verdicts = h.take("verdicts")
        running = store.running()
    assert [v["model_version"] for v in verdicts] == ["1", "2", "1"]
    assert [round(v["score"], 4) for v in verdicts] == [0.2, 0.7, 0.2]
    assert [v["defective"] for v in verdicts] == [False, True, False]
    assert [r["version"] for r in running.values()] == ["1"]


def test_the_model_file_is_loaded_and_hashed_once_at_start(
    model_file: Path, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
):
    """A model's session and hash cost time and memory in proportion to its size: one of each
    serves both its registration as version one and the judging. (Counted, not replaced.)"""
    import hashlib

    import onnxruntime as ort

    blob = model_file.read_bytes()
    sessions: list[object] = []
    hashed: list[int] = []  # hashes of the model's bytes
    real_session, real_sha256 = ort.InferenceSession, hashlib.sha256

    class CountedSession(real_session):  # type: ignore[misc, valid-type]
        def __init__(self, model, *args, **kwargs):
            sessions.append(model)
            super().__init__(model, *args, **kwargs)

    def counted_sha256(data=b"", **kwargs):
        if bytes(data) == blob:
            hashed.append(1)
        return real_sha256(data, **kwargs)

    monkeypatch.setattr(ort, "InferenceSession", CountedSession)
    monkeypatch.setattr(hashlib, "sha256", counted_sha256)
    params = {"model": str(model_file), "backend": "onnxruntime"}
    with AgentHarness(ClassificationAgent, params=params, name="cls", redis={"main": redis_client}) as h:
        assert (len(sessions), len(hashed)) == (1, 1)
        h.send("frames", frame(1, peak=204))
        [verdict] = h.take("verdicts")
    assert verdict["model_version"] == "1" and verdict["defective"] is True
    [registered] = ModelVersions(redis_client, "cls").versions()
    assert (registered.version, registered.sha256) == ("1", real_sha256(blob).hexdigest())
