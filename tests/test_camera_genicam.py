"""The genicam source through harvesters and a real GenTL producer: viky.cti, shipped with genicam.

viky.cti is a virtual camera that harvesters opens exactly like hardware (three devices,
serial numbers 0-2, PixelFormat Mono8 or RGBa8, Width/Height up to 800, AcquisitionFrameRate
up to 200, no exposure, gain or trigger features). A GenTL producer serves one process, so
each test opens one camera at a time.
"""

from __future__ import annotations

import gc
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pytest
import redis
import yaml
from harvesters.core import Harvester

from conftest import read_messages, wait_until
from graphrun import AgentStartError
from graphrun.graph import Graph
from graphrun.redis_server import RedisServer
from graphrun.runner import HEALTH_PREFIX, AgentRunner
from graphrun.testing import AgentHarness
from graphrun_agents.camera.agent import CameraAgent
from graphrun_agents.camera.genicam_source import CTI_ENV, apply_features, resolve_cti
from graphrun_agents.errors import DeviceNotFoundError, FeatureError, GenTLProducerError

VIKY = "pkg:genicam/viky.cti"
VIKY_DIR = str(Path(resolve_cti(VIKY)[0]).parent)


def camera(**params: object) -> AgentHarness:
    settings = {"source": "genicam", "cti": VIKY, "fps": 200, "timeout": 2.0, **params}
    return AgentHarness(CameraAgent, params=settings, name="cam_front")


def refused(error: type[Exception], pattern: str, **params: object) -> None:
    """The camera does not start, for good (AgentStartError: not restarted), because of ``error``."""
    with pytest.raises(AgentStartError) as failure:
        with camera(**params):
            pass
    assert isinstance(failure.value.__cause__, error)
    assert re.search(pattern, str(failure.value.__cause__)), str(failure.value.__cause__)


def test_viky_frames_reach_a_real_redis_stream_with_shape_dtype_and_metadata(
    graph_file: Callable[[str], Graph], start_agent: Callable[..., AgentRunner], redis_client: redis.Redis
) -> None:
    graph = graph_file(f"""\
name: viky
agents:
  cam_front:
    type: camera
    params:
      source: genicam
      cti: "{VIKY}"
      device: VikyTL_DEV_green
      count: 60
      part_id_start: 1000
      features: {{PixelFormat: Mono8, Width: 320, Height: 240, AcquisitionFrameRate: 100}}
    outputs: {{frames: {{stream: cam.front.frames, maxlen: 1000}}}}
""")
    start_agent(graph, "cam_front")
    wait_until(lambda: redis_client.xlen("cam.front.frames") >= 60, what="60 frames from viky")
    frames = [m.payload for m in read_messages(redis_client, "cam.front.frames")]
    assert len(frames) == 60
    for i, frame in enumerate(frames):
        assert frame["image"].shape == (240, 320) and frame["image"].dtype == np.uint8
        assert (frame["width"], frame["height"], frame["pixel_format"]) == (320, 240, "Mono8")
        assert frame["camera"] == "cam_front"
        assert frame["frame"] == i
        assert frame["exposure_us"] is None and frame["gain"] is None  # viky has neither feature
    parts = [f["part_id"] for f in frames]
    assert parts[0] >= 1000 and parts == sorted(set(parts))  # gaps only where the device dropped frames
    stamps = [f["timestamp"] for f in frames]
    assert stamps == sorted(stamps)
    assert any(f["image"].std() > 0 for f in frames)  # a real picture, not an empty buffer

    def health() -> dict | None:
        records = redis_client.hgetall(f"{HEALTH_PREFIX}viky:cam_front")
        return json.loads(next(iter(records.values()))) if records else None

    wait_until(lambda: (h := health()) is not None and h.get("frames") == 60, what="the health record")
    record = health()
    assert record is not None
    assert record["source"] == "genicam" and record["device"]["serial"] == "1"
    assert record["dropped"] == parts[-1] - parts[0] - 59
    assert record["agent_state"] == "finished"  # the camera's own; "state" is the runtime's


def test_rgba8_frames_are_sent_as_bgr8() -> None:
    with camera(features={"PixelFormat": "RGBa8", "Width": 200, "Height": 100}) as h:
        h.produce(3)
        frames = h.take("frames")
    assert [f["image"].shape for f in frames] == [(100, 200, 3)] * 3
    assert all(f["pixel_format"] == "BGR8" and f["image"].dtype == np.uint8 for f in frames)


@pytest.fixture
def node_map() -> Iterator[Any]:
    """The feature tree of viky's first device, opened with harvesters directly."""
    harvester = Harvester()
    harvester.add_file(resolve_cti(VIKY)[0])
    harvester.update()
    acquirer = harvester.create(0)
    try:
        yield acquirer.remote_device.node_map
    finally:
        acquirer.destroy()
        harvester.reset()


def test_features_are_applied_in_order_up_to_the_first_refused_one(node_map: Any) -> None:
    height = node_map.Height.value
    with pytest.raises(FeatureError, match="'Nonexistent'"):
        apply_features(node_map, {"Width": 300, "Nonexistent": 1, "Height": height + 10})
    assert node_map.Width.value == 300  # before the refused feature: applied
    assert node_map.Height.value == height  # after it: not touched


def test_an_unquoted_on_or_off_in_yaml_sets_an_enumeration(node_map: Any) -> None:
    features = yaml.safe_load("{GenDCStreamingMode: On}")
    assert features == {"GenDCStreamingMode": True}  # what YAML makes of it
    apply_features(node_map, features)
    assert node_map.GenDCStreamingMode.value == "On"
    apply_features(node_map, yaml.safe_load("{GenDCStreamingMode: Off}"))
    assert node_map.GenDCStreamingMode.value == "Off"


def test_a_list_of_features_may_set_one_feature_twice_and_the_last_value_wins() -> None:
    # Selector-indexed features (TriggerSelector, TriggerMode...) need this form on real cameras.
    features = [{"PixelFormat": "Mono8"}, {"Width": 200}, {"Height": 100}, {"Width": 300}]
    with camera(features=features) as h:
        h.produce(1)
        (frame,) = h.take("frames")
    assert frame["image"].shape == (100, 300)


def test_a_feature_the_device_lacks_is_named_in_the_error() -> None:
    refused(FeatureError, r"no feature 'ExposureTime' \(asked to set it to 5000\)",
            features={"PixelFormat": "Mono8", "ExposureTime": 5000})


def test_a_value_the_device_refuses_is_named_in_the_error() -> None:
    refused(FeatureError, r"refused Width = 5000: .*Max = 800", features={"Width": 5000})
    refused(FeatureError, r"refused PixelFormat = 'Mono12'.*allowed: RGBa8, Mono8", features={"PixelFormat": "Mono12"})


def test_graphrun_agent_gives_up_on_a_refused_feature_with_the_feature_named(redis_server: RedisServer, tmp_path: Path) -> None:
    graph = tmp_path / "bad.yaml"
    graph.write_text(f"""\
name: bad
agents:
  cam: {{type: camera, params: {{source: genicam, cti: "{VIKY}", features: {{Gain: 2.0}}}}}}
""")
    done = subprocess.run([sys.executable, "-m", "graphrun", "agent", str(graph), "cam", "--redis", f"main={redis_server.url}"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 78  # "cannot start": the launcher does not restart it
    assert "FeatureError: the device has no feature 'Gain' (asked to set it to 2.0)" in done.stderr


def test_a_missing_cti_file_is_reported_with_its_path(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "producer.cti"
    refused(GenTLProducerError, f"cti '{missing}' is not a file", cti=str(missing))


def test_a_file_that_is_not_a_gentl_producer_is_reported(tmp_path: Path) -> None:
    wrong = tmp_path / "wrong.cti"
    wrong.write_text("this is not a shared library")
    refused(GenTLProducerError, f"{wrong} offers no device", cti=str(wrong))


def test_without_a_cti_the_producer_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(CTI_ENV, raising=False)
    refused(GenTLProducerError, f"set params.cti to a .cti file, or {CTI_ENV}", cti=None)
    monkeypatch.setenv(CTI_ENV, VIKY_DIR)  # the standard form: a folder holding producers
    with camera(cti=None, features={"PixelFormat": "Mono8", "Width": 100, "Height": 100}) as h:
        h.produce(1)
        assert h.take("frames")[0]["image"].shape == (100, 100)


@pytest.mark.parametrize(("device", "serial"), [("2", "2"), ("VikyTL_DEV_green", "1"), (None, "0")])
def test_the_device_is_selected_by_serial_number_or_id(device: str | None, serial: str) -> None:
    with camera(device=device) as h:
        assert h.status["device"]["serial"] == serial


def test_an_unknown_device_is_refused_listing_the_devices_found() -> None:
    # Not AgentStartError: the camera may be plugged in later, so the launcher retries.
    with pytest.raises(DeviceNotFoundError, match=r"'front-left'.*id 'VikyTL_DEV_red' serial '0'"):
        with camera(device="front-left"):
            pass


def test_software_trigger_needs_the_trigger_software_feature() -> None:
    refused(FeatureError, "'TriggerSoftware'", trigger="software")


def test_with_a_hardware_trigger_part_ids_come_from_the_trigger_port() -> None:
    # viky streams on its own, as a camera fired by a sensor on its trigger line would.
    with camera(trigger="hardware", features={"PixelFormat": "Mono8", "Width": 160, "Height": 120}) as h:
        for part in (7, 8, 12):
            h.send("trigger", {"part_id": part})
        frames = h.take("frames")
    assert [f["part_id"] for f in frames] == [7, 8, 12]
    assert [f["frame"] for f in frames] == [0, 1, 2]


def test_frames_the_device_drops_are_counted_and_their_part_ids_skipped() -> None:
    # Two buffers at 200 frames/s and a reader pausing between frames: the producer
    # overwrites frames nobody fetched, and the device's frame ids show the gaps.
    with camera(buffers=2, features={"PixelFormat": "Mono8", "Width": 100, "Height": 100, "AcquisitionFrameRate": 200}) as h:
        for _ in range(6):
            h.produce(1)
            time.sleep(0.05)
        frames = h.take("frames")
        dropped = h.status["dropped"]
    parts = [f["part_id"] for f in frames]
    assert dropped > 0
    assert parts[-1] - parts[0] + 1 == len(frames) + dropped
    assert [f["frame"] for f in frames] == list(range(6))  # the camera's own count has no gaps


def test_a_lost_device_is_reopened_with_backoff_and_the_loss_reported() -> None:
    with camera(timeout=0.3, reconnect_delay=0.05, features={"PixelFormat": "Mono8", "Width": 160, "Height": 120}) as h:
        h.produce(3)
        # Stop the producer's acquisition behind the agent's back: the device stops
        # delivering, exactly what a camera that lost power or link looks like from here.
        h.agent._source._acquirer.stop()
        h.produce(1)
        assert h.status["state"] == "lost" and h.status["lost"] == 1
        assert "no frame within 0.3 s" in h.status["last_error"]
        for _ in range(50):
            h.produce(1)
            if h.status["reconnects"] and h.status["frames"] > 3:
                break
        frames = h.take("frames")
    assert h.status["reconnects"] == 1 and h.status["state"] in ("acquiring", "stopped")
    assert len(frames) > 3
    assert [f["frame"] for f in frames] == list(range(len(frames)))


def test_a_long_acquisition_hands_every_buffer_back_and_keeps_memory_stable() -> None:
    process = psutil.Process(os.getpid())
    with camera(features={"PixelFormat": "Mono8", "Width": 320, "Height": 240, "AcquisitionFrameRate": 200}) as h:
        acquirer = h.agent._source._acquirer
        rss = []
        for i in range(2_000):
            h.produce(1)
            h.outputs.clear()  # the harness keeps what is sent; a stream would be bounded
            if i in (200, 1_999):
                gc.collect()
                rss.append(process.memory_info().rss)
        assert acquirer.num_holding_filled_buffers == 0
        assert h.status["frames"] == 2_000
    growth_mb = (rss[1] - rss[0]) / 2**20
    assert growth_mb < 20, f"memory grew by {growth_mb:.1f} MB over 1,800 frames"
