"""The HMI page in a real browser: the system's headless Chromium, driven by Playwright,
shows what an operator sees and does what an operator does.

The verdicts come from the real classification agent running the shipped model on
synthetic parts, so the defect map drawn is the model's own.
"""

from __future__ import annotations

import os
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from conftest import wait_until
from graphrun.testing import AgentHarness
from graphrun_agents.camera.synthetic import SyntheticConfig, render_part
from graphrun_agents.classification.agent import ClassificationAgent
from graphrun_agents.hmi.agent import HmiAgent
from test_hmi import TWO_CAMERAS, frame_payload, verdict_payload
from test_hmi_operator import TOKEN, ticking

playwright = pytest.importorskip("playwright.sync_api")

CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary found (chromium, chromium-browser, google-chrome)")
REPO = Path(__file__).resolve().parents[1]
#: Set to 1 to write the screenshot README.md shows (docs/hmi.png) from the screenshot test.
UPDATE_SCREENSHOT = os.environ.get("GRAPHRUN_UPDATE_SCREENSHOT") == "1"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with playwright.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                     args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.set_default_timeout(20_000)
    page.on("dialog", lambda dialog: dialog.accept())  # "Start a new shift?"
    yield page
    context.close()


def judged_parts() -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Any]]:
    """Frames and the classifier's verdicts for parts 41 (good) and 42 (a defect on its front view);
    and where the renderer drew that defect."""
    frames, truth42 = [], None
    for part, rate in ((41, 0.0), (42, 1.0)):
        for view in ("front", "back"):
            image, truth = render_part(part, SyntheticConfig(width=1280, height=1024, view=view,
                                                             defect_rate=rate if view == "front" else 0.0))
            frames.append(frame_payload(f"cam_{view}", part, image, view=view))
            if part == 42 and view == "front":
                truth42 = truth
    with AgentHarness(ClassificationAgent, params={"backend": "onnxruntime", "model_updates": False}) as cls:
        for frame in frames:
            cls.send("frames", frame)
        verdicts = [dict(v) for v in cls.take("verdicts")]
    assert [(v["part_id"], v["camera"], v["defective"]) for v in verdicts] == [
        (41, "cam_front", False), (41, "cam_back", False), (42, "cam_front", True), (42, "cam_back", False)]
    return frames, verdicts, truth42["defects"][0]


@pytest.fixture(scope="module")
def judged() -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Any]]:
    return judged_parts()


def start_hmi(judged: Any, port: int = 0, **params: Any) -> AgentHarness:
    frames, verdicts, _ = judged
    h = AgentHarness(HmiAgent, name="hmi", groups=TWO_CAMERAS,
                     params={"port": port, "title": "Finger followers", "reject_window": 2, "reject_alarm": 0.5,
                             "reason_codes": ["R1-real-defect", "R2-false-call", "R3-rework"], **params})
    h.__enter__()
    for frame in frames:
        h.send("front" if frame["camera"] == "cam_front" else "back", frame)
    for verdict in verdicts:
        h.send("cls_front" if verdict["camera"] == "cam_front" else "cls_back", verdict)
    return h


@pytest.fixture
def line(judged: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[AgentHarness]:
    """An HMI that has seen part 41 pass and part 42 rejected by the model; the operator token is set."""
    monkeypatch.setenv("GRAPHRUN_OPERATOR_TOKEN", TOKEN)
    h = start_hmi(judged)
    h.take("operator_events")  # the reject-rate alarm part 42 raised
    try:
        with ticking(h):
            yield h
    finally:
        h.__exit__(None, None, None)


def url(h: AgentHarness) -> str:
    return f"http://127.0.0.1:{h.agent.server.port}/"


def sent_events(h: AgentHarness) -> list[Any]:
    """The operator events the agent sent: the page shows an action at once, the event follows at its next tick."""
    events: list[Any] = []
    wait_until(lambda: events.extend(h.take("operator_events")) or events, timeout=20, what="an operator event")
    return events


def sign_in(page: Any, token: str = TOKEN) -> None:
    page.click("#signin")
    page.fill("#token", token)
    page.click("#signin-form button")


# --- what the operator sees --------------------------------------------------------------------


def test_the_page_shows_the_rejected_part_its_defect_and_an_image_per_camera(line: AgentHarness, page: Any) -> None:
    page.goto(url(line))

    page.wait_for_selector('section.tile.reject[data-camera="cam_front"]')
    assert "Finger followers" in page.inner_text("h1")
    assert "REJECT" in page.inner_text('#history-body tr[data-part="42"]')
    assert "OK" in page.inner_text('#history-body tr[data-part="41"]')
    assert "DEFECT" in page.inner_text('section[data-camera="cam_front"] .verdict')
    assert page.get_attribute('section[data-camera="cam_back"]', "class") == "tile ok"
    for camera in ("cam_front", "cam_back"):
        page.wait_for_function(f'document.querySelector(\'img[alt="{camera}"]\')?.naturalWidth === 640')
    assert page.inner_text("#link") == "LIVE"


def test_the_models_defect_map_is_drawn_over_the_rejected_image_where_the_defect_is(
    line: AgentHarness, page: Any, judged: Any
) -> None:
    defect = judged[2]
    page.goto(url(line))

    overlay = page.wait_for_selector('section[data-camera="cam_front"] svg.defects')

    assert overlay.get_attribute("data-part") == "42" and int(overlay.get_attribute("data-hot")) >= 1
    assert overlay.get_attribute("viewBox") == "0 0 1280 1024"  # drawn in frame pixels, scaled like the image
    box = overlay.query_selector("rect.box")
    x, y = float(box.get_attribute("x")), float(box.get_attribute("y"))
    w, h = float(box.get_attribute("width")), float(box.get_attribute("height"))
    assert x <= defect["x"] <= x + w and y <= defect["y"] <= y + h, f"box {x, y, w, h}, defect at {defect}"
    assert overlay.query_selector("text").text_content() == f"DEFECT {judged[1][2]['score']:.2f}"  # label, score
    assert page.query_selector('section[data-camera="cam_back"] svg.defects') is None  # a good part: no hot cell drawn


def test_the_reject_rate_alarm_shows_over_the_whole_page(line: AgentHarness, page: Any) -> None:
    page.goto(url(line))

    page.wait_for_selector("body.alarming")
    assert "REJECT RATE ALARM: 1 of the last 2 parts" in page.inner_text("#alarm")
    assert page.inner_text("#rate") == "50.0 %" and "alarm at 50.0 %" in page.inner_text("#window-limit")


# --- what the operator does ---------------------------------------------------------------------


def test_the_operator_signs_in_and_acknowledges_a_reject_with_a_reason(line: AgentHarness, page: Any) -> None:
    page.goto(url(line))
    row = '#rejects-body tr[data-part="42"]'
    page.wait_for_selector(row)
    assert "sign in to acknowledge" in page.inner_text(row)

    sign_in(page)
    page.select_option(f"{row} select.reason", "R2-false-call")
    page.click(f"{row} button")

    page.wait_for_function(f"document.querySelector('{row}').innerText.includes('ACKNOWLEDGED')")
    assert "R2-false-call" in page.inner_text(row)
    [event] = sent_events(line)
    assert (event["event"], event["part_id"], event["reason"]) == ("acknowledged", 42, "R2-false-call")


def test_a_wrong_token_is_refused_and_nothing_can_be_acknowledged_or_reset(line: AgentHarness, page: Any) -> None:
    page.goto(url(line))
    page.wait_for_selector('#rejects-body tr[data-part="42"]')

    sign_in(page, "not-the-token")

    page.wait_for_function("document.getElementById('operator-error').innerText.includes('token')")
    assert page.is_hidden("#reset") and page.is_hidden("#whoami")
    assert page.query_selector("#rejects-body button") is None
    assert line.take("operator_events") == []


def test_the_operator_resets_the_shifts_counters(line: AgentHarness, page: Any) -> None:
    page.goto(url(line))
    page.wait_for_function("document.getElementById('parts').innerText === '2'")

    sign_in(page)
    page.click("#reset")

    page.wait_for_function("document.getElementById('parts').innerText === '0'")
    assert page.inner_text("#rejects") == "0"
    [event] = sent_events(line)
    assert event["event"] == "counters_reset" and event["shift"]["parts"] == 2


def test_the_page_reconnects_by_itself_after_the_hmi_restarts(judged: Any, page: Any) -> None:
    with socket.socket() as probe:  # a free port, for both lives of the HMI
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    first = start_hmi(judged, port)
    try:
        page.goto(f"http://127.0.0.1:{port}/")
        page.wait_for_function("document.getElementById('link').innerText === 'LIVE'")
    finally:
        first.__exit__(None, None, None)
    page.wait_for_function("document.getElementById('link').innerText === 'NO CONNECTION'")

    second = AgentHarness(HmiAgent, name="hmi", groups=TWO_CAMERAS, params={"port": port})
    with second:
        second.send("cls_front", verdict_payload("cam_front", 77, "crack", 0.9))

        page.wait_for_selector('#history-body tr[data-part="77"]')  # no reload: the same page
        assert page.inner_text("#link") == "LIVE" and page.inner_text("#parts") == "1"


def test_a_screenshot_of_the_page_shows_a_red_and_a_green_camera_tile(
    line: AgentHarness, page: Any, tmp_path: Path
) -> None:
    page.goto(url(line))
    sign_in(page)
    page.wait_for_selector('#rejects-body tr[data-part="42"] button')  # signed in: the reject can be acknowledged
    page.wait_for_selector('section[data-camera="cam_front"] svg.defects')
    for camera in ("cam_front", "cam_back"):
        page.wait_for_function(f'document.querySelector(\'img[alt="{camera}"]\')?.naturalWidth === 640')
    page.add_style_tag(content="body.alarming #alarm { animation: none; }")  # the alarm's steady red
    shot = tmp_path / "hmi.png"

    page.screenshot(path=str(shot))

    image = cv2.imread(str(shot))
    assert image is not None and image.shape[:2] == (800, 1280)
    assert image.reshape(-1, 3).std(axis=0).max() > 20, "the screenshot is (nearly) one colour"
    # The rejected camera's tile is framed in the page's red (#e0352b, BGR 43, 53, 224).
    red = np.all(np.abs(image.astype(int) - (43, 53, 224)) < 12, axis=2)
    assert red.sum() > 2000, "no red reject border in the screenshot"
    green = np.all(np.abs(image.astype(int) - (85, 168, 31)) < 12, axis=2)  # #1fa855: the OK tile
    assert green.sum() > 2000, "no green OK border in the screenshot"
    yellow = np.all(np.abs(image.astype(int) - (31, 210, 255)) < 12, axis=2)  # #ffd21f: the defect's cells
    assert yellow.sum() > 200, "no defect drawn over the rejected image"
    if UPDATE_SCREENSHOT:
        (REPO / "docs").mkdir(exist_ok=True)
        shutil.copyfile(shot, REPO / "docs" / "hmi.png")
