"""``graphrun request``: an image file into a running classification agent, the verdict out as JSON."""

from __future__ import annotations

import json
import sys

import cv2
import pytest
from conftest import wait_until
from graphrun.cli import main
from graphrun_agents.camera.synthetic import SyntheticConfig, render_part
from graphrun_agents.classification.model import DEFAULT_MODEL

GRAPH = """\
name: ask-line
redis: {{main: {{url: "{url}"}}}}
agents:
  classification:
    type: classification
    params: {{backend: onnxruntime}}
    inputs: {{frames: {{from: "main:line.frames"}}}}
    outputs: {{verdicts: "main:line.verdicts"}}
"""

pytestmark = pytest.mark.skipif(not DEFAULT_MODEL.is_file(), reason=f"the shipped model {DEFAULT_MODEL} is missing")


@pytest.fixture
def line(graph_file, redis_server, start_agent):
    graph = graph_file(GRAPH.format(url=redis_server.url))
    runner = start_agent(graph, "classification")
    wait_until(runner.started.is_set, timeout=60, what="the classification agent started")
    return graph


def parts(wanted: bool, count: int) -> list[tuple[int, object]]:
    """Parts of the synthetic front view whose truth is ``wanted`` (defective or not)."""
    found, i = [], 0
    while len(found) < count:
        image, truth = render_part(i, SyntheticConfig(view="front", seed=3))
        if truth["defective"] == wanted:
            found.append((i, image))
        i += 1
    return found


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".tiff"])
def test_an_image_file_is_judged_and_the_verdict_printed_as_json(line, tmp_path, capsys, suffix):
    [(index, image)] = parts(True, 1)
    path = tmp_path / f"part{suffix}"
    assert cv2.imwrite(str(path), image)
    code = main(["request", line.file, "classification.frames", str(path), "--timeout", "60",
                 "--field", f"part_id={index}", "--field", "camera=bench"])
    out, err = capsys.readouterr()
    assert code == 0, err
    verdict = json.loads(out)
    assert (verdict["part_id"], verdict["camera"]) == (index, "bench")
    assert verdict["defective"] is True and verdict["label"]
    assert verdict["model"] == "finger-follower-defects"


def test_a_good_part_is_judged_good(line, tmp_path, capsys):
    [(_, image)] = parts(False, 1)
    path = tmp_path / "good.png"
    cv2.imwrite(str(path), image)
    assert main(["request", line.file, "classification.frames", str(path), "--timeout", "60"]) == 0
    assert json.loads(capsys.readouterr().out)["defective"] is False


def test_no_answer_within_the_timeout_exits_1_and_says_so(graph_file, redis_server, tmp_path, capsys):
    graph = graph_file(GRAPH.format(url=redis_server.url))  # no agent runs
    path = tmp_path / "part.json"
    path.write_text(json.dumps({"part_id": 1}))
    assert main(["request", graph.file, "classification.frames", str(path), "--timeout", "0.3"]) == 1
    assert "no answer from classification.verdicts" in capsys.readouterr().err


def test_a_file_that_is_no_image_is_named_in_the_error(graph_file, redis_server, tmp_path, capsys):
    graph = graph_file(GRAPH.format(url=redis_server.url))
    path = tmp_path / "broken.png"
    path.write_bytes(b"not a png")
    assert main(["request", graph.file, "classification.frames", str(path)]) == 1
    assert f"{path} is not an image OpenCV can read" in capsys.readouterr().err


def test_without_opencv_an_image_request_says_what_to_install(graph_file, redis_server, tmp_path, capsys,
                                                              monkeypatch):
    graph = graph_file(GRAPH.format(url=redis_server.url))
    path = tmp_path / "part.png"
    cv2.imwrite(str(path), parts(True, 1)[0][1])
    monkeypatch.setitem(sys.modules, "cv2", None)  # as if OpenCV were not installed: its import fails
    assert main(["request", graph.file, "classification.frames", str(path)]) == 1
    assert "needs OpenCV: pip install 'graphrun[inference]'" in capsys.readouterr().err


def test_an_unknown_port_lists_the_agents_inputs(graph_file, redis_server, tmp_path, capsys):
    graph = graph_file(GRAPH.format(url=redis_server.url))
    path = tmp_path / "p.json"
    path.write_text("{}")
    assert main(["request", graph.file, "classification.frame", str(path)]) == 1
    assert "its inputs: classification.frames" in capsys.readouterr().err
