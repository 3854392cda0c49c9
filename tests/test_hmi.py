"""The HMI agent: what its web server shows for the frames and verdicts it was given.

Every check goes over real HTTP to the agent's own server (on a port the system
chooses), and images are decoded with OpenCV as a browser would.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import cv2
import numpy as np
import pytest
from pydantic import ValidationError

from conftest import wait_until, write_messages
from graphrun import AgentStartError, DeadLetter
from graphrun.graph import parse_graph
from graphrun.runner import AgentRunner
from graphrun.testing import AgentHarness
from graphrun_agents.camera.synthetic import SyntheticConfig, render_part
from graphrun_agents.errors import AgentConfigError, HmiServerError
from graphrun_agents.hmi.agent import HmiAgent
from graphrun_agents.hmi.state import LiveState

TWO_CAMERAS = {"frames": ["front", "back"], "verdicts": ["cls_front", "cls_back"]}


# --- payloads and HTTP ----------------------------------------------------------------


def frame_payload(camera: str, part_id: int, image: np.ndarray | None = None, *, pixel_format: str = "Mono8",
                  view: str = "front") -> dict[str, Any]:
    """A camera's frame; by default a synthetic finger-follower as the camera agent renders it."""
    if image is None:
        image, _ = render_part(part_id, SyntheticConfig(width=1280, height=1024, view=view, defect_rate=0.0,
                                                        pixel_format=pixel_format))
    return {"image": image, "camera": camera, "part_id": part_id, "frame": part_id, "timestamp": time.time(),
            "pixel_format": pixel_format, "width": int(image.shape[1]), "height": int(image.shape[0])}


def verdict_payload(camera: str, part_id: int, label: str = "ok", score: float = 0.05) -> dict[str, Any]:
    return {"part_id": part_id, "camera": camera, "defective": label != "ok", "label": label, "score": score,
            "threshold": 0.5, "model": "defects", "model_version": "3", "backend": "onnxruntime",
            "preprocess_ms": 1.2, "inference_ms": 4.5}


def get(port: int, path: str) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as answer:
            return answer.status, dict(answer.headers), answer.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def state(port: int) -> dict[str, Any]:
    status, _, body = get(port, "/api/state")
    assert status == 200
    return json.loads(body)


def camera(snapshot: dict[str, Any], name: str) -> dict[str, Any]:
    return {c["name"]: c for c in snapshot["cameras"]}[name]


def jpeg(port: int, name: str) -> np.ndarray:
    status, headers, body = get(port, f"/frame/{name}.jpg")
    assert status == 200 and headers["Content-Type"] == "image/jpeg"
    image = cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_UNCHANGED)
    assert image is not None, "the preview is not a JPEG OpenCV can decode"
    return image


@pytest.fixture
def hmi() -> Iterator[AgentHarness]:
    with AgentHarness(HmiAgent, name="hmi", params={"port": 0}, groups=TWO_CAMERAS) as harness:
        yield harness


def port_of(harness: AgentHarness) -> int:
    return harness.agent.server.port


# --- the page's state -------------------------------------------------------------------


def test_the_state_shows_each_cameras_latest_frame_and_verdict_and_the_parts(hmi: AgentHarness) -> None:
    for part in (1, 2):
        hmi.send("front", frame_payload("cam_front", part))
        hmi.send("back", frame_payload("cam_back", part, view="back"))
    hmi.send("cls_front", verdict_payload("cam_front", 1))
    hmi.send("cls_back", verdict_payload("cam_back", 1))
    hmi.send("cls_front", verdict_payload("cam_front", 2, "scratch", 0.93))
    hmi.send("cls_back", verdict_payload("cam_back", 2))

    snapshot = state(port_of(hmi))

    front, back = camera(snapshot, "cam_front"), camera(snapshot, "cam_back")
    assert (front["status"], back["status"]) == ("reject", "ok")
    assert front["verdict"]["label"] == "scratch" and front["verdict"]["score"] == pytest.approx(0.93)
    assert front["frame"]["part_id"] == 2 and front["frame"]["width"] == 1280 and front["frames"] == 2
    assert front["port"] == "front"
    assert [(p["part_id"], p["outcome"], p["label"]) for p in snapshot["parts"]] == [
        (2, "REJECT", "scratch"),
        (1, "OK", "ok"),
    ]
    assert snapshot["parts"][0]["views"]["cam_front"] == {"label": "scratch", "score": 0.93, "defective": True}
    assert snapshot["counters"]["parts"] == 2 and snapshot["counters"]["rejects"] == 1
    assert snapshot["counters"]["reject_rate"] == pytest.approx(0.5)
    assert hmi.status["parts"] == 2 and hmi.status["rejects"] == 1


def test_cameras_are_listed_in_the_order_of_the_graphs_frame_ports(hmi: AgentHarness) -> None:
    hmi.send("cls_back", verdict_payload("cam_back", 1))
    hmi.send("back", frame_payload("cam_back", 1, np.zeros((8, 8), np.uint8)))
    hmi.send("front", frame_payload("cam_front", 1, np.zeros((8, 8), np.uint8)))

    assert [c["name"] for c in state(port_of(hmi))["cameras"]] == ["cam_front", "cam_back"]


def test_frames_without_verdicts_show_the_image_with_no_verdict(hmi: AgentHarness) -> None:
    hmi.send("front", frame_payload("cam_front", 5))

    snapshot = state(port_of(hmi))

    front = camera(snapshot, "cam_front")
    assert front["status"] == "none" and front["verdict"] is None and front["frame"]["part_id"] == 5
    assert snapshot["parts"] == [] and snapshot["counters"]["parts"] == 0
    assert jpeg(port_of(hmi), "cam_front").size > 0


def test_verdicts_without_frames_are_shown_and_the_image_is_not_found(hmi: AgentHarness) -> None:
    hmi.send("cls_back", verdict_payload("cam_back", 8, "crack", 0.8))

    snapshot = state(port_of(hmi))

    back = camera(snapshot, "cam_back")
    assert back["status"] == "reject" and back["frame"] is None
    assert snapshot["parts"][0]["outcome"] == "REJECT"
    assert get(port_of(hmi), "/frame/cam_back.jpg")[0] == 404


def test_a_part_with_a_missing_view_is_pending_then_incomplete() -> None:
    live = LiveState(views=2, history=10, incomplete_after=5.0)
    live.add_verdict("cam_front", verdict_payload("cam_front", 3), created=100.0, now=100.0)

    assert live.snapshot(now=101.0)["parts"][0]["outcome"] == "PENDING"
    assert live.snapshot(now=105.0)["parts"][0]["outcome"] == "INCOMPLETE"
    live.add_verdict("cam_back", verdict_payload("cam_back", 3), created=100.0, now=106.0)
    assert live.snapshot(now=106.0)["parts"][0]["outcome"] == "OK"


def test_a_verdicts_defect_map_is_in_the_state_with_the_frame_pixels_it_covers(hmi: AgentHarness) -> None:
    cells = np.zeros((16, 20), np.uint8)
    cells[7, 9] = 250
    hmi.send("cls_front", dict(verdict_payload("cam_front", 3, "defect", 0.98), defect_map=cells,
                               defect_map_region=[0, 0, 1280, 1024]))
    hmi.send("cls_back", dict(verdict_payload("cam_back", 3), defect_map=cells.astype(np.float32),
                              defect_map_region=[0, 0, 1280, 1024]))

    snapshot = state(port_of(hmi))

    front = camera(snapshot, "cam_front")["verdict"]
    assert np.array_equal(np.array(front["defect_map"]), cells) and front["defect_map_region"] == [0, 0, 1280, 1024]
    back = camera(snapshot, "cam_back")["verdict"]
    assert back["defect_map"] is None and back["defect_map_region"] is None  # not a uint8 map: left out


def test_a_redelivered_verdict_counts_once_and_the_first_verdict_of_a_view_stands(hmi: AgentHarness) -> None:
    hmi.send("cls_front", verdict_payload("cam_front", 4, "pitting", 0.7))
    hmi.send("cls_front", verdict_payload("cam_front", 4, "pitting", 0.7))
    hmi.send("cls_front", verdict_payload("cam_front", 4, "ok", 0.1))

    snapshot = state(port_of(hmi))

    assert snapshot["counters"]["parts"] == 1 and snapshot["counters"]["rejects"] == 1
    assert snapshot["parts"][0]["views"]["cam_front"]["label"] == "pitting"


def test_a_score_that_is_not_a_number_is_shown_as_none_and_the_state_stays_valid_json(hmi: AgentHarness) -> None:
    hmi.send("cls_front", verdict_payload("cam_front", 1, "crack", float("nan")))

    snapshot = state(port_of(hmi))  # the page's JSON.parse accepts no NaN

    assert camera(snapshot, "cam_front")["verdict"]["score"] is None
    assert snapshot["parts"][0]["outcome"] == "REJECT" and snapshot["parts"][0]["score"] is None


def test_the_history_keeps_only_the_most_recent_parts_but_counts_them_all() -> None:
    with AgentHarness(HmiAgent, params={"port": 0, "history": 3}, groups={"verdicts": ["cls_front"]}) as h:
        for part in range(1, 8):
            h.send("cls_front", verdict_payload("cam_front", part))
        h.send("cls_front", verdict_payload("cam_front", 1))  # a late copy of a part no longer listed

        snapshot = state(port_of(h))

    assert [p["part_id"] for p in snapshot["parts"]] == [7, 6, 5]
    assert snapshot["counters"]["parts"] == 7


def test_verdict_ports_named_apart_from_frame_ports_pair_by_camera_name() -> None:
    groups = {"frames": ["front"], "verdicts": ["cls_front"]}
    with AgentHarness(HmiAgent, params={"port": 0}, groups=groups) as h:
        h.send("front", frame_payload("cam_front", 2))
        h.send("cls_front", verdict_payload("cam_front", 2, "chip", 0.9))

        snapshot = state(port_of(h))

    assert [c["name"] for c in snapshot["cameras"]] == ["cam_front"]
    assert camera(snapshot, "cam_front")["status"] == "reject"
    assert snapshot["views"] == 1 and snapshot["parts"][0]["outcome"] == "REJECT"


# --- previews -----------------------------------------------------------------------------


def test_a_preview_is_a_jpeg_scaled_to_the_preview_width(hmi: AgentHarness) -> None:
    hmi.send("front", frame_payload("cam_front", 1))
    hmi.send("back", frame_payload("cam_back", 1, pixel_format="BGR8", view="back"))

    assert jpeg(port_of(hmi), "cam_front").shape == (512, 640)
    assert jpeg(port_of(hmi), "cam_back").shape == (512, 640, 3)


def test_a_5_megapixel_frame_keeps_its_aspect_and_its_fine_detail_is_averaged_not_aliased(hmi: AgentHarness) -> None:
    stripes = np.zeros((2048, 2448), np.uint8)
    stripes[:, ::2] = 255  # one-pixel stripes: sampling would show them as bars or moire

    hmi.send("front", frame_payload("cam_front", 1, stripes))
    preview = jpeg(port_of(hmi), "cam_front")

    assert preview.shape == (535, 640)
    assert abs(float(preview.mean()) - 127.5) < 3 and float(preview.std()) < 6


def test_a_frame_narrower_than_the_preview_is_not_enlarged(hmi: AgentHarness) -> None:
    hmi.send("front", frame_payload("cam_front", 1, np.full((120, 160), 99, np.uint8)))

    assert jpeg(port_of(hmi), "cam_front").shape == (120, 160)


def test_a_camera_with_no_frame_yet_is_not_found(hmi: AgentHarness) -> None:
    status, headers, body = get(port_of(hmi), "/frame/cam_front.jpg")

    assert status == 404 and b"cam_front" in body and headers["Cache-Control"] == "no-store"


def test_only_the_latest_frame_is_served(hmi: AgentHarness) -> None:
    port = port_of(hmi)
    hmi.send("front", frame_payload("cam_front", 1, np.zeros((240, 320), np.uint8)))
    assert jpeg(port, "cam_front").mean() < 5
    hmi.send("front", frame_payload("cam_front", 2, np.full((240, 320), 250, np.uint8)))
    hmi.send("front", frame_payload("cam_front", 3, np.full((240, 320), 128, np.uint8)))

    assert abs(float(jpeg(port, "cam_front").mean()) - 128) < 3
    assert camera(state(port), "cam_front")["frame"]["part_id"] == 3


def test_a_tile_shows_the_newest_frame_its_verdict_is_about(hmi: AgentHarness) -> None:
    port = port_of(hmi)
    for part, level in ((1, 40), (2, 120), (3, 200)):
        hmi.send("front", frame_payload("cam_front", part, np.full((60, 80), level, np.uint8)))
    hmi.send("cls_front", verdict_payload("cam_front", 2, "crack", 0.8))

    front = camera(state(port), "cam_front")

    assert (front["frame"]["part_id"], front["latest_part_id"], front["status"]) == (2, 3, "reject")
    assert abs(float(jpeg(port, "cam_front").mean()) - 120) < 3


def test_a_classifier_far_behind_leaves_the_newest_frame_without_a_verdict(hmi: AgentHarness) -> None:
    hmi.send("cls_front", verdict_payload("cam_front", 1, "crack", 0.8))
    for part in range(1, 9):  # more frames than are kept: part 1's is gone
        hmi.send("front", frame_payload("cam_front", part, np.full((60, 80), 10 * part, np.uint8)))

    front = camera(state(port_of(hmi)), "cam_front")

    assert (front["frame"]["part_id"], front["status"], front["verdict"]["part_id"]) == (8, "none", 1)


def test_a_frame_without_an_image_array_goes_to_the_dead_letters(hmi: AgentHarness) -> None:
    with pytest.raises(DeadLetter, match="cam_front"):
        hmi.send("front", dict(frame_payload("cam_front", 1, np.zeros((4, 4), np.uint8)), image=[1, 2, 3]))


def test_a_frame_is_encoded_once_however_many_times_it_is_asked_for(hmi: AgentHarness) -> None:
    port = port_of(hmi)
    hmi.send("front", frame_payload("cam_front", 1))
    first = get(port, "/frame/cam_front.jpg")[2]

    assert get(port, "/frame/cam_front.jpg")[2] == first
    assert state(port)["previews_encoded"] == 1
    hmi.send("front", frame_payload("cam_front", 2))
    jpeg(port, "cam_front")
    assert state(port)["previews_encoded"] == 2


@pytest.mark.parametrize(("pixel_format", "full_scale"), [("Mono12", 4095), ("Mono10", 1023), ("Mono16", 65535)])
def test_16_bit_frames_are_scaled_to_8_bits_by_their_pixel_formats_depth(
    hmi: AgentHarness, pixel_format: str, full_scale: int
) -> None:
    image = np.zeros((200, 300), np.uint16)
    image[:, 150:] = full_scale
    image[:, :150] = full_scale // 2
    hmi.send("front", frame_payload("cam_front", 1, image, pixel_format=pixel_format))

    preview = jpeg(port_of(hmi), "cam_front")

    assert preview.dtype == np.uint8 and preview.shape == (200, 300)
    assert abs(float(preview[:, 170:].mean()) - 255) < 3
    assert abs(float(preview[:, :130].mean()) - 127) < 3


def test_a_bgra_frame_is_previewed_in_colour_without_its_alpha(hmi: AgentHarness) -> None:
    image = np.zeros((100, 100, 4), np.uint8)
    image[..., 2] = 255  # red
    image[..., 3] = 7
    hmi.send("front", frame_payload("cam_front", 1, image, pixel_format="BGRa8"))

    preview = jpeg(port_of(hmi), "cam_front")

    assert preview.shape == (100, 100, 3)
    assert preview[..., 2].mean() > 240 and preview[..., :2].mean() < 15


def test_an_image_the_hmi_cannot_show_is_refused_with_its_dtype(hmi: AgentHarness) -> None:
    hmi.send("front", frame_payload("cam_front", 1, np.zeros((10, 10), np.float32), pixel_format="Mono32f"))

    status, _, body = get(port_of(hmi), "/frame/cam_front.jpg")

    assert status == 415 and b"float32" in body


# --- the web server -------------------------------------------------------------------------


def read_part(stream: Any) -> np.ndarray:
    """The next image of a multipart MJPEG stream."""
    assert stream.readline() == b"--graphrun-frame\r\n"
    headers = {}
    while (line := stream.readline()) != b"\r\n":
        name, _, value = line.decode().partition(":")
        headers[name.strip()] = value.strip()
    assert headers["Content-Type"] == "image/jpeg"
    body = stream.read(int(headers["Content-Length"]))
    assert stream.read(2) == b"\r\n"
    return cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_UNCHANGED)


def test_an_mjpeg_stream_sends_each_new_frame_and_ends_when_the_agent_stops() -> None:
    with AgentHarness(HmiAgent, params={"port": 0, "stream_fps": 60}, groups=TWO_CAMERAS) as h:
        h.send("front", frame_payload("cam_front", 1, np.full((60, 80), 30, np.uint8)))  # the camera is known
        stream = urllib.request.urlopen(f"http://127.0.0.1:{port_of(h)}/stream/cam_front.mjpg", timeout=10)
        assert stream.headers["Content-Type"] == "multipart/x-mixed-replace; boundary=graphrun-frame"
        assert abs(float(read_part(stream).mean()) - 30) < 3
        h.send("front", frame_payload("cam_front", 2, np.full((60, 80), 220, np.uint8)))
        assert abs(float(read_part(stream).mean()) - 220) < 3

    assert stream.read() == b""  # the server closed it: no viewer keeps a stopped HMI's thread


def open_and_drop(port: int, path: str, *, read_first: bytes = b"") -> int:
    """Requests ``path``, reads the status line (and up to ``read_first``), then hangs up: a viewer going away."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(f"GET {path} HTTP/1.0\r\nHost: hmi\r\n\r\n".encode())
        answer = b""
        while b"\r\n" not in answer or (read_first and read_first not in answer):
            chunk = conn.recv(65536)
            if not chunk:
                break
            answer += chunk
        return int(answer.split(b" ", 2)[1])


def threads_since(before: set[threading.Thread]) -> list[threading.Thread]:
    """Threads running now that did not run at ``before``: the ones this test's requests started."""
    return [t for t in threading.enumerate() if t not in before]


def test_a_stream_of_an_unknown_camera_is_not_found_and_holds_no_thread(hmi: AgentHarness) -> None:
    hmi.send("front", frame_payload("cam_front", 1, np.zeros((60, 80), np.uint8)))
    before = set(threading.enumerate())

    statuses = [open_and_drop(port_of(hmi), f"/stream/nocam{i}.mjpg") for i in range(200)]

    wait_until(lambda: not threads_since(before), timeout=20, what="the request threads to end")
    assert set(statuses) == {404}


def test_every_stream_ends_when_its_viewer_goes_even_with_no_new_frame(hmi: AgentHarness) -> None:
    hmi.send("front", frame_payload("cam_front", 1, np.zeros((60, 80), np.uint8)))
    before = set(threading.enumerate())

    for _ in range(20):  # each viewer gets the tile's frame, then no other comes, then it hangs up
        assert open_and_drop(port_of(hmi), "/stream/cam_front.mjpg", read_first=b"\xff\xd9") == 200
    assert threads_since(before), "no thread served the streams"

    wait_until(lambda: not threads_since(before), timeout=20, what="the stream threads to end")




def test_every_answer_has_its_content_type_and_is_not_cached(hmi: AgentHarness) -> None:
    hmi.send("front", frame_payload("cam_front", 1))
    port = port_of(hmi)

    for path, content_type in [("/", "text/html; charset=utf-8"), ("/api/state", "application/json"),
                               ("/frame/cam_front.jpg", "image/jpeg")]:
        status, headers, _ = get(port, path)
        assert (status, headers["Content-Type"], headers["Cache-Control"]) == (200, content_type, "no-store")
    assert get(port, "/nothing/here")[0] == 404


def test_the_page_is_self_contained(hmi: AgentHarness) -> None:
    page = get(port_of(hmi), "/")[2].decode()

    assert "/api/events" in page
    assert "http://" not in page and "https://" not in page and "<link" not in page


def test_a_taken_port_is_an_error_naming_it() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(HmiServerError, match=f"port {port}: the port is already in use"):
            with AgentHarness(HmiAgent, params={"port": port}, groups=TWO_CAMERAS):
                pass


def test_an_address_this_machine_does_not_have_fails_the_start_for_good() -> None:
    with pytest.raises(AgentStartError, match="192.0.2.1"):
        with AgentHarness(HmiAgent, params={"host": "192.0.2.1", "port": 0}, groups=TWO_CAMERAS):
            pass


def test_the_port_is_free_again_after_stop() -> None:
    with AgentHarness(HmiAgent, params={"port": 0}, groups=TWO_CAMERAS) as h:
        port = port_of(h)
        assert get(port, "/api/state")[0] == 200

    with socket.socket() as again:
        again.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        again.bind(("127.0.0.1", port))  # as the next HMI's server would


def test_an_hmi_with_no_inputs_does_not_start() -> None:
    with pytest.raises(AgentConfigError, match="no inputs"):
        with AgentHarness(HmiAgent, params={"port": 0}):
            pass


def test_an_unknown_parameter_is_refused_by_name() -> None:
    with pytest.raises(ValidationError, match="refresh"):
        HmiAgent.Params.model_validate({"refresh": 100})


# --- in a graph, on real Redis ---------------------------------------------------------------

GRAPH = """
name: line
redis: {{main: {{url: {url}}}}}
agents:
  hmi:
    type: hmi
    params: {{port: 0}}
    inputs:
      frames: {{front: "main:cam.front.frames", back: "main:cam.back.frames"}}
      verdicts: {{cls_front: "main:cls.front.verdicts", cls_back: "main:cls.back.verdicts"}}
"""


def feed_line(client: Any) -> None:
    """What two cameras and two classifiers would write for parts 1 and 2 (part 2 has a chip at the back)."""
    for view in ("front", "back"):
        write_messages(client, f"cam.{view}.frames",
                       [frame_payload(f"cam_{view}", p, view=view) for p in (1, 2)], producer=f"cam_{view}")
        labels = {1: "ok", 2: "chip" if view == "back" else "ok"}
        write_messages(client, f"cls.{view}.verdicts",
                       [verdict_payload(f"cam_{view}", p, labels[p], 0.9 if labels[p] != "ok" else 0.1) for p in (1, 2)],
                       producer=f"cls_{view}")


def test_in_a_graph_the_hmi_reads_frames_and_verdicts_from_redis_streams(
    redis_server: Any, redis_client: Any, start_agent: Callable[..., AgentRunner]
) -> None:
    runner = start_agent(parse_graph(GRAPH.format(url=redis_server.url), "line.yaml"), "hmi")
    wait_until(lambda: "url" in runner.status, what="the HMI's web server")
    port = runner.agent.server.port
    redis_client.xgroup_create("cam.front.frames", "cls_front", id="0", mkstream=True)

    feed_line(redis_client)

    wait_until(lambda: state(port)["counters"]["verdicts"] == 4 and state(port)["counters"]["frames"] == 4,
               what="every frame and verdict to reach the HMI")
    snapshot = state(port)
    assert [(p["part_id"], p["outcome"]) for p in snapshot["parts"]] == [(2, "REJECT"), (1, "OK")]
    assert camera(snapshot, "cam_back")["status"] == "reject" and camera(snapshot, "cam_front")["status"] == "ok"
    assert jpeg(port, "cam_front").shape == (512, 640)
    # The HMI reads through its own consumer group: the classifier's group still gets every frame.
    read = redis_client.xreadgroup("cls_front", "cls_front-0", {"cam.front.frames": ">"})
    assert [len(entries) for _, entries in read] == [2]
