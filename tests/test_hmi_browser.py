"""The HMI page in a real browser: headless Chromium renders what an operator would see."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from graphrun.testing import AgentHarness
from graphrun_agents.hmi.agent import HmiAgent
from test_hmi import TWO_CAMERAS, frame_payload, verdict_payload

CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary found (chromium, chromium-browser, google-chrome)")


def chromium(tmp_path: Path, url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Load ``url`` headless, with every network feature off but the page's own requests."""
    command = [
        str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=3000", *args, url,
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    return done


@pytest.fixture
def line() -> Iterator[int]:
    """An HMI that has seen part 41 pass and part 42 rejected for a scratch on its front view."""
    with AgentHarness(HmiAgent, name="hmi", params={"port": 0, "title": "Finger followers"}, groups=TWO_CAMERAS) as h:
        for part in (41, 42):
            h.send("front", frame_payload("cam_front", part))
            h.send("back", frame_payload("cam_back", part, pixel_format="BGR8", view="back"))
            h.send("cls_back", verdict_payload("cam_back", part))
        h.send("cls_front", verdict_payload("cam_front", 41))
        h.send("cls_front", verdict_payload("cam_front", 42, "scratch", 0.93))
        yield h.agent.server.port


def test_the_page_shows_the_rejected_part_its_defect_and_an_image_per_camera(line: int, tmp_path: Path) -> None:
    dom = chromium(tmp_path, f"http://127.0.0.1:{line}/", "--dump-dom").stdout

    assert "Finger followers" in dom
    assert re.search(r'<tr data-part="42">.*?REJECT.*?scratch.*?</tr>', dom, re.S)
    assert re.search(r'<tr data-part="41">.*?OK.*?</tr>', dom, re.S)
    assert re.search(r'<section class="tile reject" data-camera="cam_front">.*?>REJECT<.*?scratch', dom, re.S)
    assert re.search(r'<section class="tile ok" data-camera="cam_back">', dom)
    for camera in ("cam_front", "cam_back"):
        assert re.search(rf'<img alt="{camera}" src="/frame/{camera}\.jpg\?seq=2">', dom), f"no image of {camera}"
    assert "LIVE" in dom


def test_a_screenshot_of_the_page_shows_a_red_and_a_green_camera_tile(line: int, tmp_path: Path) -> None:
    shot = tmp_path / "hmi.png"
    chromium(tmp_path, f"http://127.0.0.1:{line}/", f"--screenshot={shot}", "--window-size=1280,800")

    image = cv2.imread(str(shot))
    assert image is not None and image.shape[:2] == (800, 1280)
    assert image.reshape(-1, 3).std(axis=0).max() > 20, "the screenshot is (nearly) one colour"
    # The rejected camera's tile is framed in the page's red (#e0352b, BGR 43, 53, 224).
    red = np.all(np.abs(image.astype(int) - (43, 53, 224)) < 12, axis=2)
    assert red.sum() > 2000, "no red reject border in the screenshot"
    green = np.all(np.abs(image.astype(int) - (85, 168, 31)) < 12, axis=2)  # #1fa855: the OK tile
    assert green.sum() > 2000, "no green OK border in the screenshot"
