"""The archive agent against a real redis-server: what it keeps, when it acknowledges,
how it is queried, and what retention deletes. Files go to a real directory."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import redis
from archive_parts import FRAMES, RESULTS, STREAMS, VERDICTS, frame, graph_text, image, result, send, verdict, write_part
from conftest import caught_up, wait_until

from graphrun import GraphError
from graphrun.cli import main
from graphrun.graph import Graph, parse_graph
from graphrun.redis_server import RedisServer
from graphrun.runner import AgentRunner
from graphrun_agents.archive import images
from graphrun_agents.archive.index import Entry, Index

DAY = 86_400.0


@pytest.fixture
def archive_dir(tmp_path: Path) -> Path:
    return tmp_path / "archive"


@pytest.fixture
def run_archive(graph_file: Callable[[str], Graph], redis_server: RedisServer,
                archive_dir: Path) -> Iterator[Callable[..., AgentRunner]]:
    """Start the archive agent of the test graph with ``params``; ``stop(runner)`` ends it."""
    threads: dict[AgentRunner, threading.Thread] = {}

    def start(**params: object) -> AgentRunner:
        graph = graph_file(graph_text(archive_dir, **params))
        runner = AgentRunner(graph, "archive", replica=0, redis_urls={"main": redis_server.url})
        threads[runner] = threading.Thread(target=runner.run, name="archive", daemon=True)
        threads[runner].start()
        wait_until(runner.started.is_set, what="the archive agent's start")
        return runner

    def stop(runner: AgentRunner) -> None:
        runner.request_stop()
        threads[runner].join(30)
        assert not threads[runner].is_alive(), "the archive agent did not stop"

    start.stop = stop  # type: ignore[attr-defined]
    yield start
    for runner in threads:
        runner.request_stop()
    for thread in threads.values():
        thread.join(30)


def entries(directory: Path, **query: object) -> list[Entry]:
    try:
        index = Index(directory, readonly=True)
    except FileNotFoundError:  # not made yet
        return []
    try:
        return index.query(**query)  # type: ignore[arg-type]
    finally:
        index.close()


def all_read(client: redis.Redis) -> bool:
    return all(caught_up(client, s, "archive") for s in STREAMS if client.exists(s) and client.xlen(s))


def pending(client: redis.Redis) -> int:
    return sum(client.xpending(s, "archive")["pending"] for s in STREAMS if client.exists(s))


# --- what is kept --------------------------------------------------------------------------


def test_rejected_parts_are_stored_with_images_verdicts_model_version_and_plc_result_and_passed_parts_are_not(
        redis_client: redis.Redis, run_archive, archive_dir: Path) -> None:
    run_archive()
    write_part(redis_client, 1, front="crack")
    write_part(redis_client, 2)                                   # passed: not kept
    write_part(redis_client, 3, outcome="incomplete")             # the PLC was told to recheck it: kept
    wait_until(lambda: all_read(redis_client), what="every message acknowledged")

    stored = {e.part_id: e for e in entries(archive_dir)}
    assert sorted(stored) == [1, 3]
    crack = stored[1]
    assert (crack.outcome, crack.label, crack.plc_sequence) == ("defective", "crack", 1)
    assert crack.model_versions == "finger-follower:3"
    folder = archive_dir / crack.path
    for port, camera in (("front", "front"), ("back", "back")):
        kept = images.load(str(folder / crack.record["frames"][port]["file"]))
        assert np.array_equal(kept, image(1, camera)), f"{port} image is not the one sent, bit for bit"
        assert crack.record["frames"][port]["exposure_us"] == 800.0
    on_disk = json.loads((folder / "part.json").read_text())
    assert on_disk == crack.record
    assert on_disk["verdicts"]["v_front"]["label"] == "crack" and on_disk["verdicts"]["v_front"]["model_version"] == "3"
    assert on_disk["plc"]["outcome"] == "defective" and on_disk["plc"]["sequence"] == 1
    assert on_disk["missing"] == []
    assert stored[3].outcome == "incomplete"


def test_sixteen_bit_images_are_kept_exactly(redis_client: redis.Redis, run_archive, archive_dir: Path) -> None:
    run_archive()
    deep = image(5, "front", shape=(64, 80), dtype=np.uint16)
    write_part(redis_client, 5, back="pitting", image=deep)
    wait_until(lambda: entries(archive_dir), what="the part stored")
    [entry] = entries(archive_dir)
    kept = images.load(str(archive_dir / entry.path / entry.record["frames"]["front"]["file"]))
    assert kept.dtype == np.uint16 and np.array_equal(kept, deep)
    assert entry.label == "pitting"


def test_an_array_in_a_verdict_is_kept_as_a_file_of_its_own(
        redis_client: redis.Redis, run_archive, archive_dir: Path) -> None:
    run_archive()
    created = time.time()
    defect_map = np.linspace(0, 1, 12 * 16, dtype=np.float32).reshape(12, 16)
    for camera, stream in FRAMES.items():
        send(redis_client, stream, frame(81, camera), created)
    send(redis_client, VERDICTS["v_front"], {**verdict(81, "front", label="crack"), "defect_map": defect_map}, created)
    send(redis_client, VERDICTS["v_back"], verdict(81, "back"), created)
    send(redis_client, RESULTS, result(81, "defective", "crack"), created)
    wait_until(lambda: entries(archive_dir), what="the part stored")
    [entry] = entries(archive_dir)
    kept = entry.record["verdicts"]["v_front"]["defect_map"]
    assert kept["dtype"] == "float32" and kept["shape"] == [12, 16]
    assert np.array_equal(images.load(str(archive_dir / entry.path / kept["file"])), defect_map)


def test_a_parts_messages_stay_unacknowledged_until_it_is_stored(
        redis_client: redis.Redis, run_archive, archive_dir: Path) -> None:
    run_archive(join_timeout=120)
    created = write_part(redis_client, 7, front="chip", with_result=False)
    wait_until(lambda: pending(redis_client) == 4, what="the part's four messages read and held")
    time.sleep(0.5)
    assert pending(redis_client) == 4, "a held message was acknowledged before its part was stored"
    assert entries(archive_dir) == []

    send(redis_client, RESULTS, result(7, "defective", "chip"), created)
    wait_until(lambda: all_read(redis_client), what="the part's messages acknowledged")
    [entry] = entries(archive_dir)
    assert entry.part_id == 7 and entry.plc_sequence == 7


def test_a_part_missing_its_plc_result_and_a_frame_is_settled_at_the_join_timeout_and_the_late_result_is_added(
        redis_client: redis.Redis, run_archive, archive_dir: Path) -> None:
    run_archive(join_timeout=0.5)
    created = write_part(redis_client, 8, back="scratch", with_result=False, views=("back",))  # front frame lost
    wait_until(lambda: entries(archive_dir), what="the part settled without its PLC result")
    [entry] = entries(archive_dir)
    assert entry.plc_sequence is None and entry.outcome == "defective"
    assert sorted(entry.record["missing"]) == ["frame:front", "plc result"]
    assert list(entry.record["frames"]) == ["back"]
    wait_until(lambda: all_read(redis_client), what="its messages acknowledged")

    send(redis_client, RESULTS, result(8, "defective", "scratch", sequence=41), created)
    wait_until(lambda: entries(archive_dir)[0].plc_sequence == 41, what="the late PLC result in the index")
    [entry] = entries(archive_dir)
    assert entry.record["missing"] == ["frame:front"]
    assert json.loads((archive_dir / entry.path / "part.json").read_text())["plc"]["sequence"] == 41
    assert len(entries(archive_dir)) == 1


def test_the_same_part_delivered_again_is_one_entry_and_a_reused_part_id_is_another(
        redis_client: redis.Redis, run_archive, archive_dir: Path) -> None:
    runner = run_archive()
    created = write_part(redis_client, 9, front="crack")
    wait_until(lambda: entries(archive_dir), what="the part stored")
    write_part(redis_client, 9, front="crack", created=created)   # the same messages again
    wait_until(lambda: all_read(redis_client), what="the copies acknowledged")
    assert [e.part_id for e in entries(archive_dir)] == [9]
    run_archive.stop(runner)

    # A restarted agent has forgotten part 9: the index still knows it.
    restarted = run_archive()
    write_part(redis_client, 9, front="crack", created=created)
    wait_until(lambda: restarted.status.get("duplicates") == 1 and all_read(redis_client), what="the copies handled")
    assert len(entries(archive_dir)) == 1
    run_archive.stop(restarted)

    # A line whose counter was reset (a fresh Redis) names a new part 9: its origin differs.
    run_archive()
    write_part(redis_client, 9, back="chip", created=created + 3600)
    wait_until(lambda: len(entries(archive_dir)) == 2, what="the new part with the old id")
    assert [e.label for e in entries(archive_dir, part_id=9)] == ["crack", "chip"]


def test_a_part_that_cannot_be_written_stays_held_and_is_stored_once_the_directory_is_usable_again(
        redis_client: redis.Redis, run_archive, archive_dir: Path) -> None:
    runner = run_archive()
    tmp = archive_dir / "tmp"
    tmp.rmdir()
    tmp.write_text("not a directory")   # every write of a part's files now fails, as on a broken disk
    write_part(redis_client, 61, front="crack")
    wait_until(lambda: "error" in runner.status, what="the failure reported in the health record")
    time.sleep(0.5)
    assert pending(redis_client) == 5, "the part's messages must stay held while it cannot be stored"
    assert entries(archive_dir) == []

    tmp.unlink()
    tmp.mkdir()
    wait_until(lambda: all_read(redis_client), what="the part stored and its messages acknowledged")
    assert [e.part_id for e in entries(archive_dir)] == [61]
    assert "error" not in runner.status


def test_a_part_beyond_max_open_settles_the_oldest_open_part_early(
        redis_client: redis.Redis, run_archive, archive_dir: Path) -> None:
    runner = run_archive(max_open=1, join_timeout=600)
    created = write_part(redis_client, 71, front="crack", with_result=False)   # open, waiting for the PLC
    wait_until(lambda: runner.status.get("open") == 1, what="part 71 open")
    write_part(redis_client, 72, back="chip")
    # Long before the join timeout: part 72 made room by settling part 71 with what it had.
    wait_until(lambda: all_read(redis_client), what="both parts settled", timeout=60)
    first, second = entries(archive_dir)
    assert (first.part_id, first.plc_sequence, first.record["missing"]) == (71, None, ["plc result"])
    assert (second.part_id, second.plc_sequence) == (72, 72)
    assert runner.counters.dead_lettered == 0
    send(redis_client, RESULTS, result(71, "defective", "crack"), created)
    wait_until(lambda: entries(archive_dir, part_id=71)[0].plc_sequence == 71, what="part 71's late result added")


# --- queries ---------------------------------------------------------------------------------


def test_the_archive_is_queried_by_part_id_time_and_label_from_the_command_line(
        redis_client: redis.Redis, run_archive, archive_dir: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    run_archive()
    now = time.time()
    write_part(redis_client, 21, front="crack", when=now - 3 * 3600)
    write_part(redis_client, 22, back="chip", when=now - 2 * 3600)
    write_part(redis_client, 23, front="crack", when=now - 60)
    wait_until(lambda: len(entries(archive_dir)) == 3, what="three parts stored")
    graph = tmp_path / "graph.yaml"   # the graph file the agent was started from
    capsys.readouterr()

    def query(*args: str) -> list[dict]:
        code = main(["archive", str(graph), "--json", *args])
        out = capsys.readouterr().out
        assert code == (0 if out else 1)
        return [json.loads(line) for line in out.splitlines()]

    assert [p["part_id"] for p in query("--part", "22")] == [22]
    assert [p["part_id"] for p in query("--label", "crack")] == [21, 23]
    assert [p["part_id"] for p in query("--since", "150m")] == [22, 23]
    assert [p["part_id"] for p in query("--label", "crack", "--since", "1h")] == [23]
    until = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(now - 150 * 60))
    assert [p["part_id"] for p in query("--until", until)] == [21]
    assert query("--label", "pitting") == []
    [part] = query("--part", "21")
    assert Path(part["folder"], part["frames"]["front"]["file"]).is_file()

    assert main(["archive", str(graph), "--part", "23"]) == 0
    table = capsys.readouterr().out
    assert "crack" in table and "finger-follower:3" in table and "image front: front.png" in table


def test_the_command_names_what_is_wrong(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    graph = tmp_path / "plain.yaml"
    graph.write_text("name: plain\nagents:\n  show: {type: examples.printer, inputs: {values: 'main:x'}}\n")
    assert main(["archive", str(graph), "--label", "crack"]) == 2
    assert "no agent of type archive" in capsys.readouterr().err
    with_archive = tmp_path / "a.yaml"
    with_archive.write_text(graph_text(tmp_path / "nothing-yet"))
    assert main(["archive", str(with_archive)]) == 2
    assert "no archive index at" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["archive", str(with_archive), "--since", "yesterday-ish"])
    assert "neither a date-time" in capsys.readouterr().err


def test_a_bad_retention_setting_is_reported_with_its_line_and_field(tmp_path: Path) -> None:
    text = graph_text(tmp_path, retention={"max_bytes": "lots"})
    with pytest.raises(GraphError) as caught:
        parse_graph(text, "line.yaml")
    message = str(caught.value)
    assert "line.yaml:5" in message and "retention.max_bytes" in message


# --- retention -------------------------------------------------------------------------------


def test_retention_by_size_keeps_the_newest_parts_within_max_bytes(
        redis_client: redis.Redis, run_archive, archive_dir: Path) -> None:
    run_archive(retention={"max_bytes": 100_000})   # a part here is ~26 kB of noise and its record
    now = time.time()
    for n in range(1, 9):
        write_part(redis_client, n, front="crack", when=now - 100 + n)
    wait_until(lambda: all_read(redis_client), what="eight parts handled")
    kept = entries(archive_dir)
    assert 2 <= len(kept) < 8
    assert [e.part_id for e in kept] == list(range(9 - len(kept), 9)), "the newest parts are the ones kept"
    assert sum(e.bytes for e in kept) <= 100_000
    folders = sorted(p for p in (archive_dir / "parts").glob("*/*"))
    assert folders == sorted(archive_dir / e.path for e in kept), "a deleted part's folder is gone too"


def test_retention_by_age_deletes_parts_older_than_max_age_days(
        redis_client: redis.Redis, run_archive, archive_dir: Path) -> None:
    runner = run_archive(retention={"max_age_days": 5, "interval": 0.2})
    now = time.time()
    write_part(redis_client, 31, front="crack", when=now - 9 * DAY)
    write_part(redis_client, 32, front="crack", when=now - 4 * DAY)
    write_part(redis_client, 33, front="crack", when=now)
    wait_until(lambda: all_read(redis_client) and runner.status.get("stored") == 3, what="three parts handled")
    wait_until(lambda: [e.part_id for e in entries(archive_dir)] == [32, 33], what="the part older than 5 days deleted")
    wait_until(lambda: not any(p.name.startswith("31-") for p in (archive_dir / "parts").glob("*/*")),
               what="its folder deleted")


def test_parts_that_grow_too_old_while_the_agent_runs_are_deleted(
        redis_client: redis.Redis, run_archive, archive_dir: Path) -> None:
    run_archive(retention={"max_age_days": 3 / DAY, "interval": 0.2})   # three seconds
    write_part(redis_client, 41, front="crack")
    wait_until(lambda: entries(archive_dir), what="the part stored")
    wait_until(lambda: not entries(archive_dir), what="the part deleted once three seconds old")
    # Its row goes first, then its folder.
    wait_until(lambda: list((archive_dir / "parts").glob("*/*")) == [], what="the part's folder deleted")


# --- leftovers of a crash ---------------------------------------------------------------------


def test_files_no_index_row_names_are_removed_when_the_agent_starts(
        redis_client: redis.Redis, run_archive, archive_dir: Path) -> None:
    runner = run_archive()
    write_part(redis_client, 51, front="crack")
    wait_until(lambda: entries(archive_dir), what="the part stored")
    run_archive.stop(runner)
    [kept] = entries(archive_dir)
    half = archive_dir / "tmp" / "0123abcd"
    half.mkdir(parents=True)
    (half / "front.png").write_bytes(b"\x89PNG half")
    orphan = archive_dir / "parts" / "2026-01-01" / "52-1"
    orphan.mkdir(parents=True)
    (orphan / "part.json").write_text("{}")
    stray = archive_dir / kept.path / ".part.json.0123.tmp"
    stray.write_text("{")

    run_archive()
    assert not half.exists() and not orphan.exists() and not orphan.parent.exists() and not stray.exists()
    assert (archive_dir / kept.path / "part.json").is_file() and len(entries(archive_dir)) == 1


# --- containers -------------------------------------------------------------------------------


def test_a_container_keeps_the_archive_on_the_host() -> None:
    from graphrun_agents.archive.agent import ArchiveAgent
    from graphrun_agents.archive.params import ArchiveParams

    default = ArchiveAgent.deployment(ArchiveParams())
    assert default.volumes == ("/var/lib/graphrun/archive:/home/graphrun/.local/share/graphrun",)
    absolute = ArchiveAgent.deployment(ArchiveParams(directory="/srv/audit"))
    assert absolute.volumes == ("/srv/audit:/srv/audit",)
    relative = ArchiveAgent.deployment(ArchiveParams(directory="audit"))
    assert relative.volumes == () and "lost with it" in relative.notes[0]
