"""The trigger source: part ids that never repeat, and cameras that stay in step through it."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
import yaml

from conftest import read_messages, wait_until
from graphrun.graph import Graph, parse_graph
from graphrun.redis_server import RedisServer
from graphrun.runner import AgentRunner

SHIPPED = Path(__file__).resolve().parents[1] / "graphs" / "finger_follower.yaml"

TRIGGER = """\
name: line
agents:
  trigger:
    type: trigger
    params: {rate: 100, part_id_start: 40}
    outputs: {parts: {stream: line.parts}}
"""


def ids(client: redis.Redis, stream: str) -> list[int]:
    return [int(m["part_id"]) for m in read_messages(client, stream)]


def test_a_restarted_trigger_continues_after_the_last_part_id_it_sent(
    graph_file: Callable[[str], Graph], redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    graph = graph_file(TRIGGER)
    for _ in range(3):
        trigger = AgentRunner(graph, "trigger", replica=0, redis_urls={"main": redis_server.url})
        thread = threading.Thread(target=trigger.run, daemon=True)
        thread.start()
        wait_until(lambda: trigger.counters.sent >= 10, what="ten parts")
        trigger.request_stop()
        thread.join(15)
    sent = ids(redis_client, "line.parts")
    assert sent == list(range(40, 40 + len(sent)))  # three runs, one unbroken sequence
    assert len(sent) >= 30


# --- the shipped line: both cameras take their part ids from one trigger ----------------------


class Line:
    """The shipped graph's cameras and whatever feeds their trigger inputs, against one redis-server.

    The graph is the shipped file with smaller images, a faster line and longer frame
    streams (so that the test can read every frame back); the wiring is unchanged.
    """

    def __init__(self, graph: Graph, url: str):
        self.graph = graph
        self.urls = {instance: url for instance in graph.redis}
        self.cameras = sorted(n for n, a in graph.agents.items() if a.type == "camera")
        feeders = {b.source[0] for c in self.cameras for b in graph.agents[c].inputs.values() if b.source}
        self.feeders = sorted(feeders)
        self._running: dict[str, tuple[AgentRunner, threading.Thread]] = {}

    def start(self, name: str) -> AgentRunner:
        runner = AgentRunner(self.graph, name, replica=0, redis_urls=self.urls)
        thread = threading.Thread(target=runner.run, name=name, daemon=True)
        thread.start()
        self._running[name] = (runner, thread)
        return runner

    def stop(self, name: str) -> None:
        runner, thread = self._running.pop(name)
        runner.request_stop()
        thread.join(15)
        assert not thread.is_alive(), f"{name} did not stop"

    def stop_all(self) -> None:
        for name in list(self._running):
            self.stop(name)

    def frames(self, client: redis.Redis, camera: str) -> list[tuple[int, float]]:
        """(part id, acquisition time) of every frame ``camera`` sent."""
        stream = self.graph.agents[camera].outputs["frames"].key
        return [(int(m["part_id"]), float(m["timestamp"])) for m in read_messages(client, stream)]


@pytest.fixture
def line(redis_server: RedisServer) -> Iterator[Line]:
    text = yaml.safe_load(SHIPPED.read_text())
    for name, agent in text["agents"].items():
        if agent["type"] == "camera":
            agent["params"].update(width=64, height=48)
            agent["outputs"]["frames"]["maxlen"] = 100_000
        if agent["type"] == "trigger":
            agent["params"]["rate"] = 20
    line = Line(parse_graph(yaml.safe_dump(text), "finger_follower.yaml"), redis_server.url)
    try:
        yield line
    finally:
        line.stop_all()


def test_the_shipped_cameras_take_their_part_ids_from_one_trigger_stream(line: Line) -> None:
    streams = {line.graph.agents[c].inputs["trigger"].key for c in line.cameras if "trigger" in line.graph.agents[c].inputs}
    assert len(line.cameras) == 2 and len(streams) == 1, "both cameras must read the part ids of one trigger source"


def test_after_a_camera_restarts_both_cameras_give_one_part_the_same_id_and_no_id_repeats(
    line: Line, redis_client: redis.Redis
) -> None:
    front, back = line.cameras[1], line.cameras[0]  # cam_front, cam_back
    for name in line.feeders + line.cameras:
        line.start(name)
    wait_until(lambda: min(len(line.frames(redis_client, c)) for c in line.cameras) >= 20, what="20 frames each")
    line.stop(front)
    before = line.frames(redis_client, front)
    time.sleep(3.0)  # parts pass while the front camera is down
    line.start(front)
    wait_until(lambda: len(line.frames(redis_client, front)) >= len(before) + 40, what="40 frames after the restart")
    line.stop_all()

    after = line.frames(redis_client, front)[len(before):]
    front_ids = [p for p, _ in before + after]
    assert front_ids == sorted(set(front_ids)), "the front camera repeated or reordered part ids across its restart"
    back_times = dict(line.frames(redis_client, back))
    # Every part the restarted camera saw, the other saw too, under the same id and at the
    # same moment (the same part-present event, fired on at most trigger_max_age late),
    # not a part that passed seconds earlier.
    assert all(p in back_times for p, _ in after)
    max_age = line.graph.agents[front].settings.trigger_max_age or 1.0
    late = [(p, round(t - back_times[p], 2)) for p, t in after if abs(t - back_times[p]) > max_age + 0.5]
    assert not late, f"frames of one part id taken far apart by the two cameras: {late[:5]}"
