"""The synthetic finger-follower renderer: deterministic, labelled as configured, and a real problem."""

from __future__ import annotations

from collections import Counter

import cv2
import numpy as np
import pytest

from graphrun_agents.camera.synthetic import DEFECT_KINDS, SyntheticConfig, render_part
from graphrun_agents.errors import CameraConfigError

SMALL = {"width": 320, "height": 256}


def test_the_same_seed_index_and_view_render_the_same_part() -> None:
    config = SyntheticConfig(seed=7, defect_rate=1.0, distractor_rate=1.0, **SMALL)
    image_a, truth_a = render_part(3, config)
    image_b, truth_b = render_part(3, config)
    assert np.array_equal(image_a, image_b)
    assert truth_a == truth_b


def test_another_seed_index_or_view_renders_another_part() -> None:
    config = SyntheticConfig(seed=7, **SMALL)
    image, _ = render_part(3, config)
    for other_index, other in ((4, config), (3, SyntheticConfig(seed=8, **SMALL)), (3, SyntheticConfig(seed=7, view="back", **SMALL))):
        assert not np.array_equal(image, render_part(other_index, other)[0])


@pytest.mark.parametrize(("pixel_format", "shape"), [("Mono8", (1024, 1280)), ("BGR8", (1024, 1280, 3))])
def test_images_have_the_configured_size_and_format(pixel_format: str, shape: tuple[int, ...]) -> None:
    image, _ = render_part(0, SyntheticConfig(pixel_format=pixel_format))
    assert image.shape == shape
    assert image.dtype == np.uint8


def test_labels_follow_the_configured_defect_rate_and_kinds() -> None:
    config = SyntheticConfig(seed=1, defect_rate=0.4, distractor_rate=0.5, defect_kinds=("scratch", "pitting"), width=96, height=80)
    truths = [render_part(i, config)[1] for i in range(600)]
    labels = Counter(t["label"] for t in truths)
    assert set(labels) == {"ok", "scratch", "pitting"}
    assert 0.34 < 1 - labels["ok"] / 600 < 0.46
    assert abs(labels["scratch"] - labels["pitting"]) < 0.25 * (labels["scratch"] + labels["pitting"])
    distracted = sum(bool(t["distractors"]) for t in truths)
    assert 0.44 < distracted / 600 < 0.56
    for truth in truths:
        assert truth["defective"] == (truth["label"] != "ok")
        assert [d["kind"] for d in truth["defects"]] == ([] if truth["label"] == "ok" else [truth["label"]])
        assert {d["kind"] for d in truth["distractors"]} <= {"dust", "particle"}


def test_every_defect_kind_can_be_rendered_and_is_located_on_the_image() -> None:
    seen = set()
    for kind in DEFECT_KINDS:
        config = SyntheticConfig(seed=2, defect_rate=1.0, defect_kinds=(kind,))
        for index in range(3):
            _, truth = render_part(index, config)
            (defect,) = truth["defects"]
            assert defect["kind"] == kind
            assert 0 <= defect["x"] < config.width and 0 <= defect["y"] < config.height
            assert defect["size"] > 10
            seen.add(kind)
    assert seen == set(DEFECT_KINDS)


@pytest.mark.parametrize("kind", DEFECT_KINDS)
def test_a_defect_changes_the_part_visibly_after_downscaling_to_model_size(kind: str) -> None:
    # The same part with and without its defect: the defect is the only difference, and it
    # must survive the downscale to the model's input size.
    index = 5
    clean, _ = render_part(index, SyntheticConfig(seed=4, defect_rate=0.0, distractor_rate=0.0))
    defective, truth = render_part(index, SyntheticConfig(seed=4, defect_rate=1.0, distractor_rate=0.0, defect_kinds=(kind,)))
    assert truth["label"] == kind
    small = [cv2.resize(img, (256, 205), interpolation=cv2.INTER_AREA).astype(np.int16) for img in (clean, defective)]
    difference = np.abs(small[0] - small[1])
    assert difference.max() >= 15


def test_no_brightness_threshold_tells_defects_from_dust_and_particles() -> None:
    # The inspection problem: a part with a defect and a part with only dust or particles
    # must not be separable by how dark or bright the added marks are. Each part is compared
    # with the same part rendered clean, so only the added marks count.
    size = {"seed": 21, "width": 640, "height": 512}

    def change(index: int, **rates: float) -> tuple[int, int, int]:
        clean, _ = render_part(index, SyntheticConfig(defect_rate=0.0, distractor_rate=0.0, **size))
        marked, _ = render_part(index, SyntheticConfig(**rates, **size))
        diff = marked.astype(np.int16) - clean.astype(np.int16)
        return int(np.abs(diff).max()), int(diff.min()), int(diff.max())

    defects = np.array([change(i, defect_rate=1.0, distractor_rate=0.0) for i in range(80)])
    distractors = np.array([change(i, defect_rate=0.0, distractor_rate=1.0) for i in range(80)])
    for measure in range(3):  # strongest change, darkest mark, brightest mark
        a, b = defects[:, measure], distractors[:, measure]
        thresholds = np.unique(np.concatenate([a, b]))
        accuracy = max(max((a >= t).sum() + (b < t).sum(), (a < t).sum() + (b >= t).sum()) / 160 for t in thresholds)
        assert accuracy < 0.75, f"measure {measure} separates defects from distractors with accuracy {accuracy:.2f}"


@pytest.mark.parametrize(
    ("field", "value", "shown"),
    [("view", "side", "'side'"), ("pixel_format", "Mono16", "'Mono16'"), ("defect_rate", 1.5, "1.5"),
     ("defect_kinds", ("dent",), "'dent'"), ("width", 8, "8")],
)
def test_a_bad_setting_is_refused_naming_the_field_and_value(field: str, value: object, shown: str) -> None:
    with pytest.raises(CameraConfigError) as error:
        SyntheticConfig(**{field: value})  # type: ignore[arg-type]
    assert field in str(error.value) and shown in str(error.value)
