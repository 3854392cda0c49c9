"""kill -9 of the archive agent while it writes a part: the index never names a half part,
and after a restart every rejected part is stored exactly once, its images intact."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import redis
from archive_parts import STREAMS, graph_text, image, write_part
from conftest import caught_up, wait_until

from graphrun.redis_server import RedisServer
from graphrun_agents.archive import images
from graphrun_agents.archive.index import Index

PARTS = 10
# Big, incompressible images stored uncompressed: each part's files take long enough to
# write that the test can see a write in progress and kill the agent in the middle of it.
SHAPE = (2048, 2048)


def agent_process(graph: Path, url: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "graphrun", "agent", str(graph), "archive", "--replica", "0",
                             "--redis", f"main={url}"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def writing(directory: Path) -> bool:
    """A part's files are being written: a folder in tmp/ holds some of them."""
    try:
        return any(os.scandir(folder.path) for folder in os.scandir(directory / "tmp"))
    except FileNotFoundError:
        return False


def kill_when(process: subprocess.Popen[bytes], condition, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, f"the agent ended before {what}: {process.stderr.read().decode()[-2000:]}"
        assert time.monotonic() < end, f"gave up waiting for {what}"
        time.sleep(0.0005)
    process.send_signal(signal.SIGKILL)
    process.wait()


def stored(directory: Path) -> list[tuple[int, str, dict]]:
    try:
        index = Index(directory, readonly=True)
    except FileNotFoundError:  # not made yet
        return []
    try:
        return [(e.part_id, e.path, e.record) for e in index.query()]
    finally:
        index.close()


def assert_index_names_only_whole_parts(directory: Path) -> None:
    for part_id, path, record in stored(directory):
        folder = directory / path
        assert json.loads((folder / "part.json").read_text()) == record, f"part {part_id}: record differs"
        for port, frame in record["frames"].items():
            kept = images.load(str(folder / frame["file"]))
            assert np.array_equal(kept, image(part_id, port, SHAPE, np.uint16)), f"part {part_id}: {port} image damaged"


def test_kill_9_while_a_part_is_written_leaves_no_half_part_and_the_restart_stores_each_part_once(
        redis_server: RedisServer, redis_client: redis.Redis, tmp_path: Path) -> None:
    directory = tmp_path / "archive"
    graph = tmp_path / "graph.yaml"
    graph.write_text(graph_text(directory, png_compression=0))
    for n in range(1, PARTS + 1):
        write_part(redis_client, n, front="crack", shape=SHAPE, dtype=np.uint16)

    first = agent_process(graph, redis_server.url)
    kill_when(first, lambda: len(stored(directory)) >= 2 and writing(directory), timeout=180,
              what="a part's files half-written")
    assert writing(directory), "the kill should catch a part's files being written"
    before = stored(directory)
    assert len(before) < PARTS, "the agent finished before it could be killed"
    assert_index_names_only_whole_parts(directory)

    # Killed again at a moment of its own choosing: right after the restart stored a part.
    second = agent_process(graph, redis_server.url)
    kill_when(second, lambda: len(stored(directory)) > len(before), timeout=180, what="one more part stored")
    assert_index_names_only_whole_parts(directory)

    third = agent_process(graph, redis_server.url)
    try:
        wait_until(lambda: all(caught_up(redis_client, s, "archive") for s in STREAMS), timeout=300,
                   what="every part handled after the restarts")
    finally:
        third.terminate()
        assert third.wait(30) == 0, third.stderr.read().decode()[-2000:]
    parts = stored(directory)
    assert sorted(p for p, _, _ in parts) == list(range(1, PARTS + 1)), "each part stored exactly once"
    assert_index_names_only_whole_parts(directory)
    assert list((directory / "tmp").iterdir()) == [], "the half-written part was removed at the restart"
    on_disk = {f"parts/{p.parent.name}/{p.name}" for p in (directory / "parts").glob("*/*")}
    assert on_disk == {path for _, path, _ in parts}, "every folder on disk is a part the index names"
