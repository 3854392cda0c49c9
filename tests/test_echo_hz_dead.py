"""Watching a running graph: `graphrun echo`, `graphrun hz` and `graphrun dead`.

Each runs against a real Redis with the graph's agents running in this process. An
observer must disturb nothing: echo and hz read with XREAD, never through a group.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import redis
from conftest import TESTS, caught_up, read_messages, wait_until, write_messages
from graphrun import codec
from graphrun.cli import main
from graphrun.message import Message
from graphrun.testing import running

GRAPH = """\
name: t
redis: {{main: {{}}}}
agents:
  relay:
    type: sample_agents:Relay
    params: {params}
    inputs:
      items: {{from: "main:in", claim_idle_ms: 500, max_deliveries: 2}}
    outputs: {{copies: {{stream: out, maxlen: 1000}}}}
"""

PACED = """\
name: paced
redis: {main: {}}
agents:
  counter:
    type: examples.counter
    params: {rate: 20}
    outputs: {numbers: {stream: numbers, maxlen: 10000}}
"""


def graphrun(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    """Run a graphrun command in this process: (exit code, stdout, stderr)."""
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def groups(client: redis.Redis, stream: str) -> list[dict]:
    """Every group of a stream, with its consumers: what an observer must leave as it is."""
    found = []
    for group in client.xinfo_groups(stream):
        members = client.xinfo_consumers(stream, group["name"])
        found.append({**group, "consumers": sorted((c["name"], c["pending"]) for c in members)})
    return found


def test_echo_prints_messages_with_array_summaries_and_leaves_every_group_as_it_was(
        redis_server, redis_client, graph_file, capsys) -> None:
    graph = graph_file(GRAPH.format(params="{}"))
    with running(graph, redis_urls={"main": redis_server.url}):
        image = np.arange(24, dtype=np.uint8).reshape(4, 6)
        ids = write_messages(redis_client, "in", [{"seq": i, "img": image + i} for i in range(5)], producer="cam")
        wait_until(lambda: caught_up(redis_client, "in", "relay"), what="the relay caught up")
        before = groups(redis_client, "in")

        code, out, _ = graphrun(capsys, "echo", graph.file, "relay.items", "--last", 5, "--count", 5,
                                "--redis", f"main={redis_server.url}")

        assert code == 0
        lines = out.splitlines()
        assert [line.split()[0] for line in lines] == ids
        assert all(line.split()[1] == "cam" for line in lines)
        assert '"seq": 4' in lines[4] and '"img": "<uint8[4x6] 4..27>"' in lines[4]
        assert groups(redis_client, "in") == before  # same groups, pending counts, last-delivered ids
        assert [g["name"] for g in redis_client.xinfo_groups("out")] == []  # none made on the output either


def test_echo_follows_new_messages_only_by_default_and_stops_after_count(redis_server, redis_client, graph_file) -> None:
    graph = graph_file(GRAPH.format(params="{}"))
    with running(graph, redis_urls={"main": redis_server.url}):
        write_messages(redis_client, "in", [{"seq": 100}])  # older than the echo: not shown
        echo = subprocess.Popen([sys.executable, "-m", "graphrun", "echo", graph.file, "relay.copies", "--count", "3",
                                 "--redis", f"main={redis_server.url}"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env={**os.environ, "PYTHONPATH": str(TESTS)})  # sample_agents importable
        try:
            header = echo.stderr.readline()  # printed once its start position is fixed
            assert header.startswith("# relay.copies on main:out"), header + echo.stderr.read()
            write_messages(redis_client, "in", [{"seq": i} for i in range(3)])
            out, err = echo.communicate(timeout=60)
        finally:
            echo.kill()
        assert echo.returncode == 0, err
        assert [re.search(r'"seq": (\d+)', line).group(1) for line in out.splitlines()] == ["0", "1", "2"]
        assert all(" relay " in line and " age " in line for line in out.splitlines())


def test_echo_save_writes_images_that_decode_to_the_same_pixels(redis_server, redis_client, graph_file, capsys,
                                                                 tmp_path: Path) -> None:
    graph = graph_file(GRAPH.format(params="{}"))
    rng = np.random.default_rng(1)
    colour = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    deep = rng.integers(0, 65536, (20, 30), dtype=np.uint16)
    with running(graph, redis_urls={"main": redis_server.url}):
        [entry] = write_messages(redis_client, "in", [{"seq": 1, "frame": {"bgr": colour}, "depth": deep,
                                                       "scores": np.ones(3, np.float32)}])
        code, out, _ = graphrun(capsys, "echo", graph.file, "relay.items", "--from", "0", "--count", 1,
                                "--save", tmp_path / "frames", "--redis", f"main={redis_server.url}")
    assert code == 0
    saved = sorted(p.name for p in (tmp_path / "frames").iterdir())
    assert saved == [f"{entry}_depth.png", f"{entry}_frame.bgr.png"]  # the 1-D scores are no image
    assert np.array_equal(cv2.imread(str(tmp_path / "frames" / f"{entry}_frame.bgr.png"), cv2.IMREAD_UNCHANGED), colour)
    assert np.array_equal(cv2.imread(str(tmp_path / "frames" / f"{entry}_depth.png"), cv2.IMREAD_UNCHANGED), deep)
    assert '"scores": "<float32[3] 1.0..1.0>"' in out


def test_hz_reports_the_rate_of_a_paced_source_and_its_latency(redis_server, graph_file, capsys) -> None:
    graph = graph_file(PACED)
    with running(graph, redis_urls={"main": redis_server.url}):
        code, out, _ = graphrun(capsys, "hz", graph.file, "counter.numbers", "--window", 2, "--count", 4,
                                "--redis", f"main={redis_server.url}")
    assert code == 0
    reports = out.splitlines()
    assert len(reports) == 4
    last = re.search(r"rate ([\d.]+)/s, (\d+) msgs in 2 s, latency p50 ([\d.]+) (ms|s) p99 ([\d.]+) (ms|s)",
                     reports[-1])
    assert last, reports
    assert 10 <= float(last.group(1)) <= 30  # the counter sends 20 a second
    assert 20 <= int(last.group(2)) <= 60
    p99 = float(last.group(5)) / (1000 if last.group(6) == "ms" else 1)
    assert 0 < p99 < 5


def dead_ids(client: redis.Redis, stream: str = "in:dead") -> list[str]:
    return [i.decode() for i, _ in client.xrange(stream)]


def test_dead_requeue_puts_a_fixed_poison_message_back_and_it_is_handled_once(
        redis_server, redis_client, graph_file, capsys) -> None:
    poisoned = graph_file(GRAPH.format(params="{poison: [3]}"), name="poisoned.yaml")
    with running(poisoned, redis_urls={"main": redis_server.url}):
        write_messages(redis_client, "in", [{"seq": i} for i in range(6)])
        wait_until(lambda: redis_client.xlen("in:dead") == 1 and caught_up(redis_client, "in", "relay"),
                   what="the poison message dead-lettered")
        [dead] = dead_ids(redis_client)

        code, listing, _ = graphrun(capsys, "dead", poisoned.file, "--redis", f"main={redis_server.url}")
        assert code == 0
        assert "main:in:dead: 1 dead letter(s) (inputs relay.items)" in listing
        assert f"{dead} relay in/" in listing and "poison item 3" in listing and "max_deliveries=2" in listing
        code, shown, _ = graphrun(capsys, "dead", poisoned.file, "show", dead, "--redis", f"main={redis_server.url}")
        assert code == 0
        assert "error: failed 2 deliveries" in shown and "agent: relay (consumer relay-0)" in shown
        assert '"seq": 3' in shown

    fixed = graph_file(GRAPH.format(params="{}"), name="fixed.yaml")
    with running(fixed, redis_urls={"main": redis_server.url}):
        code, out, err = graphrun(capsys, "dead", fixed.file, "requeue", dead, "--redis", f"main={redis_server.url}")
        assert code == 0, err
        assert f"requeued {dead} to main:in as " in out
        wait_until(lambda: 3 in [m["seq"] for m in read_messages(redis_client, "out")], what="the requeued message handled")
        wait_until(lambda: caught_up(redis_client, "in", "relay"), what="the relay caught up")
    assert sorted(m["seq"] for m in read_messages(redis_client, "out")) == [0, 1, 2, 3, 4, 5]  # 3 once
    assert dead_ids(redis_client) == []
    assert redis_client.xlen("in") == 7  # the original six and the requeued copy


def test_dead_refuses_to_requeue_an_excerpt_of_a_malformed_entry(redis_server, redis_client, graph_file, capsys) -> None:
    graph = graph_file(GRAPH.format(params="{}"))
    big = codec.encode(Message({"seq": 1, "img": np.zeros(100_000, np.uint8)}))
    big = {k: bytes(v) + b"x" if k == b"b0" else v for k, v in big.items()}  # one byte too many: malformed
    with running(graph, redis_urls={"main": redis_server.url}):
        redis_client.xadd("in", big)
        wait_until(lambda: redis_client.xlen("in:dead") == 1, what="the malformed entry dead-lettered")
        [dead] = dead_ids(redis_client)
        code, _, err = graphrun(capsys, "dead", graph.file, "requeue", dead, "--redis", f"main={redis_server.url}")
    assert code == 1
    assert f"{dead} hold only excerpts of a malformed entry" in err and "nothing was requeued" in err
    assert dead_ids(redis_client) == [dead] and redis_client.xlen("in") == 1


def test_dead_purge_asks_for_yes_then_deletes_what_it_counted(redis_server, redis_client, graph_file, capsys) -> None:
    graph = graph_file(GRAPH.format(params="{reject: [0, 1, 2]}"))
    with running(graph, redis_urls={"main": redis_server.url}):
        write_messages(redis_client, "in", [{"seq": i} for i in range(3)])
        wait_until(lambda: redis_client.xlen("in:dead") == 3, what="three rejections")
        code, _, err = graphrun(capsys, "dead", graph.file, "purge", "--redis", f"main={redis_server.url}")
        assert code == 1 and "main:in:dead: 3" in err and "--yes" in err
        assert redis_client.xlen("in:dead") == 3
        first = dead_ids(redis_client)[0]
        code, _, _ = graphrun(capsys, "dead", graph.file, "purge", first, "--yes", "--redis", f"main={redis_server.url}")
        assert code == 0 and first not in dead_ids(redis_client) and redis_client.xlen("in:dead") == 2
        code, out, _ = graphrun(capsys, "dead", graph.file, "purge", "--yes", "--stream", "in",
                                "--redis", f"main={redis_server.url}")
        assert code == 0 and "purged 2 dead letter(s) of main:in:dead" in out
    assert redis_client.xlen("in:dead") == 0


def test_a_wrong_agent_port_names_the_valid_ones(redis_server, graph_file, capsys) -> None:
    graph = graph_file(GRAPH.format(params="{}"))
    url = f"main={redis_server.url}"
    code, _, err = graphrun(capsys, "echo", graph.file, "relay.frames", "--redis", url)
    assert code == 1 and "agent 'relay' has no port 'frames'; its ports: relay.copies (output), relay.items (input)" in err
    code, _, err = graphrun(capsys, "hz", graph.file, "camera.frames", "--redis", url)
    assert code == 1 and "graph 't' has no agent 'camera' (agents: relay)" in err
    code, _, err = graphrun(capsys, "echo", graph.file, "relay", "--redis", url)
    assert code == 1 and "expected AGENT.PORT" in err


def test_a_stopped_graph_exits_non_zero(redis_server, graph_file, capsys) -> None:
    graph = graph_file(GRAPH.format(params="{}"))
    # Its Redis answers, but no agent has reported: echo and hz have nothing to watch.
    code, _, err = graphrun(capsys, "echo", graph.file, "relay.items", "--redis", f"main={redis_server.url}")
    assert code == 1 and "graph 't' is not running" in err and "no agent has reported" in err
    code, _, err = graphrun(capsys, "hz", graph.file, "relay.items", "--redis", f"main={redis_server.url}")
    assert code == 1 and "is not running" in err
    # No Redis answers: not even the dead letters can be read.
    for command in (["echo", graph.file, "relay.items"], ["hz", graph.file, "relay.items"], ["dead", graph.file]):
        code, _, err = graphrun(capsys, *command, "--redis", "main=redis://127.0.0.1:1")
        assert code == 1 and "no Redis instance answers" in err, command


def test_a_graph_whose_redis_goes_away_during_a_watch_ends_it_non_zero(redis_server, graph_file) -> None:
    graph = graph_file(PACED)
    with running(graph, redis_urls={"main": redis_server.url}):
        hz = subprocess.Popen([sys.executable, "-m", "graphrun", "hz", graph.file, "counter.numbers",
                               "--redis", f"main={redis_server.url}"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert hz.stdout.readline().startswith("rate ")  # watching
            redis_server.kill()
            _, err = hz.communicate(timeout=60)
        finally:
            hz.kill()
    assert hz.returncode == 1
    assert "graph 'paced' stopped: Redis instance 'main' no longer answers" in err and "Traceback" not in err
