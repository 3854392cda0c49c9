"""The defect map: the shipped fully convolutional model says where on the part the defect is.

The model runs for real (ONNX Runtime, the shipped file) on synthetic parts whose
renderer knows where it drew each defect.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from graphrun.testing import AgentHarness
from graphrun_agents.camera.synthetic import SyntheticConfig, render_part
from graphrun_agents.classification.agent import ClassificationAgent
from graphrun_agents.classification.model import DEFAULT_MODEL, inspect, read_model


def part_frame(part_id: int, *, defect_rate: float, view: str = "front") -> tuple[dict[str, Any], dict[str, Any]]:
    image, truth = render_part(part_id, SyntheticConfig(width=1280, height=1024, view=view, defect_rate=defect_rate))
    frame = {"image": image, "camera": f"cam_{view}", "part_id": part_id, "frame": part_id, "timestamp": 0.0,
             "pixel_format": "Mono8", "width": 1280, "height": 1024}
    return frame, truth


def test_the_shipped_model_has_a_defect_map_output_beside_its_score() -> None:
    info = inspect(read_model(DEFAULT_MODEL))

    assert info.output_names == ("defect_probability", "defect_map")


def test_a_rejected_parts_hottest_cell_is_where_the_renderer_drew_the_defect() -> None:
    with AgentHarness(ClassificationAgent, params={"backend": "onnxruntime", "model_updates": False}) as h:
        truths = []
        for part in range(6):
            frame, truth = part_frame(part, defect_rate=1.0, view=("front", "back")[part % 2])
            truths.append(truth)
            h.send("frames", frame)
        verdicts = h.take("verdicts")

    assert len(verdicts) == 6
    for verdict, truth in zip(verdicts, truths):
        assert verdict["defective"], f"part {verdict['part_id']} ({truth['label']}) passed"
        cells = verdict["defect_map"]
        assert cells.dtype == np.uint8 and cells.shape == (16, 20)  # 64x64 frame pixels per cell
        assert verdict["defect_map_region"] == [0, 0, 1280, 1024]
        row, col = np.unravel_index(int(cells.argmax()), cells.shape)
        defect = truth["defects"][0]
        assert abs(col - defect["x"] / 64) <= 1.5 and abs(row - defect["y"] / 64) <= 1.5, (
            f"part {verdict['part_id']}: hottest cell {(row, col)}, {truth['label']} drawn at {defect['x'], defect['y']}"
        )
        assert cells.max() >= round(255 * verdict["threshold"])


def test_a_good_parts_map_has_no_cell_above_the_threshold() -> None:
    with AgentHarness(ClassificationAgent, params={"backend": "onnxruntime", "model_updates": False}) as h:
        for part in range(4):
            h.send("frames", part_frame(part, defect_rate=0.0, view=("front", "back")[part % 2])[0])
        verdicts = h.take("verdicts")

    for verdict in verdicts:
        assert not verdict["defective"]
        assert verdict["defect_map"].max() < 255 * verdict["threshold"]


def test_with_a_crop_the_map_covers_the_crop_in_frame_pixels() -> None:
    params = {"backend": "onnxruntime", "model_updates": False,
              "preprocess": {"roi": [320, 256, 640, 512], "resize": [320, 256]}}
    with AgentHarness(ClassificationAgent, params=params) as h:
        h.send("frames", part_frame(1, defect_rate=1.0)[0])
        (verdict,) = h.take("verdicts")

    assert verdict["defect_map_region"] == [320, 256, 640, 512] and verdict["defect_map"].shape == (16, 20)


def test_a_letterboxed_input_gets_no_map_since_it_would_cover_the_padding_too() -> None:
    params = {"backend": "onnxruntime", "model_updates": False,
              "preprocess": {"resize": [320, 256], "keep_aspect": True}}
    with AgentHarness(ClassificationAgent, params=params) as h:
        h.send("frames", part_frame(1, defect_rate=1.0)[0] | {"image": np.zeros((1000, 1000), np.uint8)})
        (verdict,) = h.take("verdicts")

    assert "defect_map" not in verdict and "defect_map_region" not in verdict
