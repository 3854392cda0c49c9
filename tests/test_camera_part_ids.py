"""Part ids never repeat across restarts of a camera, and shared triggering keeps both views in step."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from conftest import read_messages, wait_until
from graphrun import DeadLetter, frame_store
from graphrun.frame_path import store_name
from graphrun.graph import Graph
from graphrun.redis_server import RedisServer
from graphrun.runner import AgentRunner
from graphrun.testing import AgentHarness
from graphrun_agents.camera.agent import CameraAgent

FREE_RUN = """\
name: line
agents:
  cam:
    type: camera
    params: {source: synthetic, width: 64, height: 48, fps: 50, part_id_start: 7}
    outputs: {frames: {stream: cam.frames, maxlen: 100000}}
"""


# The same camera with its frames through shared memory (256 slots: none reused in these tests).
FREE_RUN_SHARED = FREE_RUN.replace("name: line\n", "name: line\nredis: {main: {frame_store: {size: 1mb, slot_size: 4kb, "
                                                   "threshold: 1kb}}}\n")


def camera_process(graph: Path, url: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "graphrun", "agent", str(graph), "cam", "--replica", "0",
                             "--redis", f"main={url}"], env=dict(os.environ),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def part_ids(client: redis.Redis, stream: str) -> list[int]:
    return [int(m["part_id"]) for m in read_messages(client, stream)]


@pytest.mark.parametrize("text", [FREE_RUN, FREE_RUN_SHARED], ids=["redis", "shared memory"])
def test_a_free_running_camera_killed_and_restarted_continues_its_part_ids(
    redis_server: RedisServer, redis_client: redis.Redis, tmp_path: Path, text: str
) -> None:
    graph = tmp_path / "line.yaml"
    graph.write_text(text)
    store = frame_store.DIRECTORY / store_name("line", "main", redis_server.url)
    first = camera_process(graph, redis_server.url)
    try:
        wait_until(lambda: redis_client.xlen("cam.frames") >= 20, what="20 frames before the kill")
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    before = part_ids(redis_client, "cam.frames")

    second = camera_process(graph, redis_server.url)
    try:
        wait_until(lambda: redis_client.xlen("cam.frames") >= len(before) + 20, what="20 frames after the restart")
    finally:
        second.terminate()
        second.wait(20)
    after = part_ids(redis_client, "cam.frames")[len(before):]
    frame_store.remove(store)
    shared = [b'"shm"' in fields[b"h"] for _, fields in redis_client.xrange("cam.frames")]
    assert shared == [text is FREE_RUN_SHARED] * len(shared)  # every frame took the path the graph says

    assert before[:3] == [7, 8, 9]  # the first run starts at part_id_start
    assert min(after) > max(before), f"part ids repeated after the restart: {after[:5]} after {before[-5:]}"
    assert after == sorted(set(after))  # and they keep increasing, one id per frame


def test_a_camera_stopped_cleanly_and_started_again_continues_its_part_ids(
    graph_file: Callable[[str], Graph], start_agent: Callable[..., AgentRunner], redis_client: redis.Redis
) -> None:
    graph = graph_file(FREE_RUN)
    for _ in range(2):
        camera = start_agent(graph, "cam")
        wait_until(lambda: camera.counters.sent >= 5, what="five frames")
        camera.request_stop()
        wait_until(lambda: camera.status.get("state") == "stopped", what="the camera to stop")
    ids = part_ids(redis_client, "cam.frames")
    assert ids == list(range(7, 7 + len(ids)))


def test_a_trigger_older_than_trigger_max_age_is_skipped_not_fired_on_a_later_part() -> None:
    params = {"source": "synthetic", "width": 64, "height": 48, "trigger": "software", "trigger_max_age": 1.0}
    with AgentHarness(CameraAgent, params=params, name="cam") as h:
        h.send("trigger", {"part_id": 5}, created=time.time() - 3.0)  # a backlog left while the camera was down
        h.send("trigger", {"part_id": 6})
        assert [f["part_id"] for f in h.take("frames")] == [6]
        assert h.status["stale_triggers"] == 1


def test_a_trigger_without_a_part_id_is_refused_where_cameras_take_every_id_from_the_trigger() -> None:
    """Cameras sharing a trigger must agree on every id: a trigger without one would be
    labelled with each camera's own count, an id the trigger never issued or already used."""
    params = {"source": "synthetic", "width": 64, "height": 48, "trigger": "software", "trigger_part_id": "required"}
    with AgentHarness(CameraAgent, params=params, name="cam") as h:
        with pytest.raises(DeadLetter, match="no part_id"):
            h.send("trigger", {})
        with pytest.raises(DeadLetter, match="negative"):
            h.send("trigger", {"part_id": -1})
        h.send("trigger", {"part_id": 8})
        assert [f["part_id"] for f in h.take("frames")] == [8]


def test_a_trigger_without_a_part_id_takes_the_cameras_own_count_by_default() -> None:
    params = {"source": "synthetic", "width": 64, "height": 48, "trigger": "software", "part_id_start": 3}
    with AgentHarness(CameraAgent, params=params, name="cam") as h:
        h.send("trigger", {})
        assert [f["part_id"] for f in h.take("frames")] == [3]
