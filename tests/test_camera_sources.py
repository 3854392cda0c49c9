"""The opencv, folder and synthetic sources through the camera agent, part ids, and the bounded stream."""

from __future__ import annotations

from collections.abc import Callable
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import cv2
import numpy as np
import pytest
import redis
from pydantic import ValidationError

from conftest import read_messages, wait_until
from graphrun import Agent, AgentStartError, Input, Message, Retry
from graphrun.graph import Graph
from graphrun.runner import AgentRunner
from graphrun.transport import trimmed_before_read
from graphrun.testing import AgentHarness
from graphrun_agents.camera.agent import CameraAgent
from graphrun_agents.camera.synthetic import SyntheticConfig, render_part
from graphrun_agents.errors import CameraConfigError, DeviceLostError
from graphrun_agents.messages import Frame


def harness(name: str = "cam", **params: object) -> AgentHarness:
    return AgentHarness(CameraAgent, params={"fps": None, **params}, name=name)


def brightness_video(path: Path, frames: int, size: tuple[int, int] = (64, 48)) -> list[int]:
    """A video whose frame i is a flat grey of level 10 * i; returns the levels."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, size)
    assert writer.isOpened()
    levels = [10 * i for i in range(frames)]
    for level in levels:
        writer.write(np.full((size[1], size[0], 3), level, dtype=np.uint8))
    writer.release()
    return levels


# --- opencv ---------------------------------------------------------------------------------


def test_a_video_file_is_played_frame_by_frame_then_the_camera_finishes(tmp_path: Path) -> None:
    video = tmp_path / "clip.avi"
    levels = brightness_video(video, 12)
    with harness(source="opencv", path=str(video)) as h:
        h.produce(15)
        frames = h.take("frames")
        assert h.status["state"] == "finished"
    assert len(frames) == 12
    assert all(f["image"].shape == (48, 64, 3) and f["pixel_format"] == "BGR8" for f in frames)
    assert [f["part_id"] for f in frames] == list(range(12))
    means = [float(f["image"].mean()) for f in frames]
    assert means == pytest.approx(levels, abs=3)  # JPEG-compressed, so nearly, not exactly


def test_a_looped_video_starts_again_and_can_be_converted_to_mono8(tmp_path: Path) -> None:
    video = tmp_path / "clip.avi"
    levels = brightness_video(video, 5)
    with harness(source="opencv", path=str(video), loop=True, pixel_format="Mono8") as h:
        h.produce(12)
        frames = h.take("frames")
    assert len(frames) == 12
    assert all(f["image"].ndim == 2 and f["pixel_format"] == "Mono8" for f in frames)
    assert [round(float(f["image"].mean()) / 10) for f in frames] == [lv // 10 for lv in levels * 3][:12]


def test_a_missing_video_file_is_refused_at_start(tmp_path: Path) -> None:
    with pytest.raises(AgentStartError, match="opencv path '.*missing.avi' does not exist") as failure:
        with harness(source="opencv", path=str(tmp_path / "missing.avi")):
            pass
    assert isinstance(failure.value.__cause__, CameraConfigError)


class MjpegStream(BaseHTTPRequestHandler):
    """An HTTP MJPEG camera that drops every connection after five frames (levels 0..80)."""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
        self.end_headers()
        for i in range(5):
            _, jpeg = cv2.imencode(".jpg", np.full((48, 64, 3), 20 * i, dtype=np.uint8))
            data = jpeg.tobytes()
            self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(data) + data + b"\r\n")
            self.wfile.flush()
            time.sleep(0.01)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def mjpeg_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), MjpegStream)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/stream.mjpg"
    server.shutdown()
    server.server_close()


def test_a_network_stream_that_drops_is_reopened_and_the_drops_reported(mjpeg_url: str) -> None:
    with harness(source="opencv", path=mjpeg_url, timeout=2.0, reconnect_delay=0.01) as h:
        for _ in range(200):
            h.produce(1)
            if h.status["frames"] >= 12:
                break
        frames = h.take("frames")
        status = dict(h.status)
    assert len(frames) == 12
    assert [round(float(f["image"].mean()) / 20) for f in frames] == [0, 1, 2, 3, 4] * 2 + [0, 1]
    assert status["lost"] == 2 and status["reconnects"] == 2
    assert "stopped delivering frames" in status["last_error"]
    assert [f["frame"] for f in frames] == list(range(12))


# --- folder ---------------------------------------------------------------------------------


def write_pngs(folder: Path, names: list[str], dtype: type = np.uint8, colour: bool = False) -> None:
    folder.mkdir(exist_ok=True)
    for i, name in enumerate(names):
        shape = (20, 30, 3) if colour else (20, 30)
        cv2.imwrite(str(folder / name), np.full(shape, (i + 1) * 20, dtype=dtype))


def test_a_folder_is_replayed_in_sorted_order_once(tmp_path: Path) -> None:
    write_pngs(tmp_path / "imgs", ["b.png", "c.png", "a.png"])  # written out of order: levels 20, 40, 60
    (tmp_path / "imgs" / "notes.txt").write_text("not an image")
    with harness(source="folder", path=str(tmp_path / "imgs")) as h:
        h.produce(5)
        frames = h.take("frames")
        assert h.status["state"] == "finished"
    assert [int(f["image"][0, 0]) for f in frames] == [60, 20, 40]  # a.png, b.png, c.png
    assert all(f["pixel_format"] == "Mono8" and (f["width"], f["height"]) == (30, 20) for f in frames)


def test_a_looped_folder_wraps_and_a_glob_selects_files(tmp_path: Path) -> None:
    write_pngs(tmp_path, ["img1.png", "img2.png", "skip.png"])
    with harness(source="folder", path=str(tmp_path / "img*.png"), loop=True) as h:
        h.produce(5)
        frames = h.take("frames")
    assert [int(f["image"][0, 0]) for f in frames] == [20, 40, 20, 40, 20]
    assert [f["frame"] for f in frames] == [0, 1, 2, 3, 4]


def test_sixteen_bit_and_colour_images_keep_their_format(tmp_path: Path) -> None:
    write_pngs(tmp_path / "deep", ["x.png"], dtype=np.uint16)
    write_pngs(tmp_path / "colour", ["x.png"], colour=True)
    with harness(source="folder", path=str(tmp_path / "deep")) as h:
        h.produce(1)
        (deep,) = h.take("frames")
    with harness(source="folder", path=str(tmp_path / "colour")) as h:
        h.produce(1)
        (colour,) = h.take("frames")
    assert deep["pixel_format"] == "Mono16" and deep["image"].dtype == np.uint16
    assert colour["pixel_format"] == "BGR8" and colour["image"].shape == (20, 30, 3)


def test_an_empty_folder_is_refused_naming_the_path(tmp_path: Path) -> None:
    with pytest.raises(AgentStartError, match=f"folder path '{tmp_path}' matches no image files") as failure:
        with harness(source="folder", path=str(tmp_path)):
            pass
    assert isinstance(failure.value.__cause__, CameraConfigError)


def test_unreadable_files_are_skipped_and_counted(tmp_path: Path) -> None:
    write_pngs(tmp_path, ["a.png", "c.png"])
    (tmp_path / "b.png").write_bytes(b"broken")
    with harness(source="folder", path=str(tmp_path)) as h:
        h.produce(3)
        assert len(h.take("frames")) == 2
        assert h.status["unreadable"] == 1


# --- synthetic, and part ids across cameras ------------------------------------------------


def synthetic(view: str, **params: object) -> AgentHarness:
    return harness(f"cam_{view}", source="synthetic", view=view, width=160, height=128, seed=3, **params)


def test_free_running_front_and_back_cameras_number_their_frames_alike() -> None:
    with synthetic("front", part_id_start=100) as front, synthetic("back", part_id_start=100) as back:
        front.produce(4)
        back.produce(4)
        fronts, backs = front.take("frames"), back.take("frames")
    assert [f["part_id"] for f in fronts] == [f["part_id"] for f in backs] == [100, 101, 102, 103]
    assert [f["camera"] for f in fronts + backs] == ["cam_front"] * 4 + ["cam_back"] * 4


def test_a_shared_trigger_gives_both_views_of_one_part_the_same_id_and_the_truth_of_that_part() -> None:
    with synthetic("front", trigger="software") as front, synthetic("back", trigger="software") as back:
        for part in (41, 7, 99):
            front.send("trigger", {"part_id": part})
            back.send("trigger", {"part_id": part})
        fronts, backs = front.take("frames"), back.take("frames")
    assert [f["part_id"] for f in fronts] == [f["part_id"] for f in backs] == [41, 7, 99]
    for frames, view in ((fronts, "front"), (backs, "back")):
        config = SyntheticConfig(width=160, height=128, seed=3, view=view)
        for frame in frames:
            image, truth = render_part(frame["part_id"], config)
            assert np.array_equal(frame["image"], image)
            assert frame["truth"] == truth


def test_a_trigger_without_a_part_id_takes_the_cameras_own_count() -> None:
    with synthetic("front", trigger="software", part_id_start=5) as h:
        h.send("trigger", {})
        h.send("trigger", {})
        assert [f["part_id"] for f in h.take("frames")] == [5, 6]


def test_synthetic_frames_carry_ground_truth_and_metadata() -> None:
    with synthetic("back", pixel_format="BGR8", defect_rate=1.0, defect_kinds=["crack"]) as h:
        h.produce(2)
        frames = h.take("frames")
    for frame in frames:
        assert frame["image"].shape == (128, 160, 3) and frame["pixel_format"] == "BGR8"
        assert frame["truth"]["label"] == "crack" and frame["truth"]["defective"] is True
        assert frame["timestamp"] > 0 and frame["exposure_us"] is None


def test_count_stops_the_camera_after_that_many_frames() -> None:
    with synthetic("front", count=3) as h:
        h.produce(4)
        assert len(h.take("frames")) == 3
        assert h.status["state"] == "finished"


def test_a_trigger_while_the_device_is_lost_is_retried_later() -> None:
    with synthetic("front", trigger="software", reconnect_delay=5.0) as h:
        h.agent._lost(DeviceLostError("unplugged"))  # the next open is five seconds away
        with pytest.raises(Retry) as retry:
            h.send("trigger", {"part_id": 1})
        assert 4.0 < retry.value.delay <= 5.0  # retried once the reopen is due, not before
        assert h.take("frames") == []
        assert h.status["lost"] == 1 and h.status["reconnects"] == 0


# --- parameters -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"source": "folder"}, "source 'folder' needs path"),
        ({"source": "synthetic", "features": {"Gain": 2}}, "source 'synthetic' takes none"),
        ({"source": "opencv", "path": "x.avi", "trigger": "hardware"}, "trigger 'hardware' needs source 'genicam'"),
        ({"source": "synthetic", "pixel_format": "RGB8"}, "pixel_format must be one of Mono8, BGR8; got 'RGB8'"),
        ({"source": "synthetic", "defect_kinds": ["dent"]}, "unknown kind(s) ['dent']"),
        ({"source": "webcam"}, "source"),
        ({"source": "synthetic", "fps": 0}, "fps"),
    ],
)
def test_bad_parameters_are_refused_with_the_field_and_value(params: dict, message: str) -> None:
    with pytest.raises(ValidationError) as error:
        CameraAgent.Params.model_validate(params)
    assert message in str(error.value)


# --- the bounded stream -------------------------------------------------------------------------


class SlowViewer(Agent):
    """A reader slower than the camera (an HMI on a busy machine)."""

    frames = Input(Frame)

    def handle(self, msg: Message) -> None:
        time.sleep(0.05)


def test_a_slow_reader_never_blocks_the_camera_and_the_frames_it_lost_are_counted(
    graph_file: Callable[[str], Graph], start_agent: Callable[..., AgentRunner], redis_client: redis.Redis
) -> None:
    graph = graph_file("""\
name: bounded
agents:
  cam:
    type: camera
    params: {source: synthetic, width: 64, height: 48, fps: null, count: 300}
    outputs: {frames: {stream: cam.frames, maxlen: 20}}
  viewer:
    type: test_camera_sources:SlowViewer
    inputs: {frames: cam.frames}
""")
    viewer = start_agent(graph, "viewer")
    wait_until(lambda: redis_client.exists("cam.frames"), what="the viewer's group")
    camera = start_agent(graph, "cam")
    wait_until(lambda: camera.counters.sent == 300, what="300 frames written")
    assert viewer.counters.handled < 300  # the camera did not wait for its reader
    assert redis_client.xlen("cam.frames") <= 300

    def caught_up() -> bool:
        group = redis_client.xinfo_groups("cam.frames")[0]
        newest = redis_client.xinfo_stream("cam.frames")["last-generated-id"]
        return group["last-delivered-id"] == newest and group["pending"] == 0

    wait_until(caught_up, what="the viewer to read the newest frame")
    # Every frame was either seen or counted as lost (the reader writes its counts each second).
    wait_until(lambda: viewer.counters.handled + (trimmed_before_read(redis_client, "cam.frames", "viewer") or 0) == 300,
               what="the viewer's delivery count")
    assert trimmed_before_read(redis_client, "cam.frames", "viewer") > 0
    kept = [m["part_id"] for m in read_messages(redis_client, "cam.frames")]
    assert kept == list(range(300 - len(kept), 300))  # the oldest went first


def test_the_frames_port_is_bounded_by_default(graph_file: Callable[[str], Graph]) -> None:
    graph = graph_file("""\
name: defaults
agents:
  cam: {type: camera, params: {source: synthetic}}
""")
    assert graph.agents["cam"].outputs["frames"].maxlen == 50
