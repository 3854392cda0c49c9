"""`graphrun status GRAPH`: what a running graph's agents and streams are doing, read from
their heartbeats and their streams; `--check` answers for one agent, as a container's
health check does."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from graphrun import transport
from conftest import TESTS, wait_until, write_messages
from graphrun import Agent, Output
from graphrun.cli import main
from graphrun.graph import load_graph
from graphrun.locate import connect
from graphrun.observe import AgentView, Observer
from graphrun.redis_server import RedisServer
from graphrun.runner import AgentRunner
from pydantic import BaseModel

ENV = {**os.environ, "PYTHONPATH": str(TESTS)}  # the test agents importable by `graphrun run`


# --- agents in known states ---------------------------------------------------------------------


class Worried(Agent):
    """Runs, but says it is degraded and why."""

    ticks = Output(dict)

    def start(self) -> None:
        self.status["degraded"] = "lens fogged up"

    def produce(self) -> None:
        self.wait(0.05)


class Slow(Agent):
    """Its start() and stop() return only once their gate file exists (none: at once)."""

    ticks = Output(dict)

    class Params(BaseModel):
        start_gate: str | None = None
        stop_gate: str | None = None

    def start(self) -> None:
        wait_for_file(self.params.start_gate)

    def produce(self) -> None:
        self.wait(0.05)

    def stop(self) -> None:
        wait_for_file(self.params.stop_gate)


def wait_for_file(path: str | None, timeout: float = 60.0) -> None:
    end = time.monotonic() + timeout
    while path is not None and not Path(path).exists() and time.monotonic() < end:
        time.sleep(0.02)


# --- reading the table ----------------------------------------------------------------------------


def table_rows(text: str, title: str) -> list[list[str]]:
    """The body rows of the rich table titled ``title``, as lists of stripped cells."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == title)
    rows: list[list[str]] = []
    body = False
    for line in lines[start + 1:]:
        if line.startswith("┡"):
            body = True
        elif line.startswith("└"):
            break
        elif body and line.startswith("│"):
            rows.append([cell.strip() for cell in line.strip("│").split("│")])
    return rows


def agent_row(text: str, agent: str) -> dict[str, str]:
    columns = ["agent", "state", "replicas", "in/s", "out/s", "failed", "dead", "trimmed", "restarts", "why"]
    [row] = [dict(zip(columns, r)) for r in table_rows(text, "agents") if r[0] == agent]
    return row


def stream_rows(text: str) -> dict[tuple[str, str], dict[str, str]]:
    """(stream, group) -> cells; a stream's later group rows inherit its name."""
    columns = ["stream", "length", "writes/s", "group", "lag", "pending", "dead"]
    found: dict[tuple[str, str], dict[str, str]] = {}
    stream = ""
    for r in table_rows(text, "streams"):
        row = dict(zip(columns, r))
        stream = row["stream"] or stream
        found[(stream, row["group"])] = row
    return found


def status(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(["status", *args])
    out = capsys.readouterr()
    return code, out.out + out.err


def graphrun(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "graphrun", *args], cwd=cwd, env=ENV, capture_output=True, check=False,
                          text=True, timeout=120)


# --- a whole graph, run by `graphrun run`, looked at from elsewhere ---------------------------------

LINE = """\
name: line
agents:
  source:
    type: sample_agents:Source
    params: {count: 40}
    outputs: {items: main:items}
  relay:
    type: sample_agents:Relay
    replicas: 2
    params: {poison: [3]}
    inputs:
      items: {from: source.items, max_deliveries: 2}
    outputs: {copies: main:copies}
"""


def test_status_from_another_folder_shows_every_agent_and_stream_with_what_was_sent(tmp_path: Path) -> None:
    graphs, elsewhere = tmp_path / "graphs", tmp_path / "elsewhere"
    graphs.mkdir(), elsewhere.mkdir()
    (graphs / "line.yaml").write_text(LINE)
    run = subprocess.Popen([sys.executable, "-m", "graphrun", "run", "line.yaml", "--duration", "120"], cwd=graphs,
                           env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def settled() -> bool:
            done = graphrun("status", str(graphs / "line.yaml"), cwd=elsewhere)
            if done.returncode != 0:
                return False
            relay, source = agent_row(done.stdout, "relay"), agent_row(done.stdout, "source")
            quiet = relay["in/s"] == "0.0" and source["out/s"] == "0.0"  # rates span a health interval or two
            return relay["dead"] == "1" and relay["replicas"] == "2/2" and "main:copies" in done.stdout and \
                stream_rows(done.stdout)[("main:copies", "-")]["length"] == "39" and quiet

        wait_until(settled, timeout=90, what="the poison item dead-lettered and the rest copied")
        done = graphrun("status", "../graphs/line.yaml", cwd=elsewhere)
        assert done.returncode == 0, done.stderr
        source, relay = agent_row(done.stdout, "source"), agent_row(done.stdout, "relay")
        assert (source["state"], source["replicas"], source["restarts"]) == ("running", "1/1", "0")
        assert (relay["state"], relay["replicas"]) == ("running", "2/2")
        # Item 3 failed twice (max_deliveries: 2) and was dead-lettered on its third delivery.
        assert (relay["failed"], relay["dead"], relay["restarts"]) == ("2", "1", "0")
        assert "last error: ValueError: poison item 3" in relay["why"]
        assert float(relay["in/s"]) == 0.0 and float(source["out/s"]) == 0.0  # all 40 long sent
        streams = stream_rows(done.stdout)
        items = streams[("main:items", "relay")]
        assert (items["length"], items["lag"], items["pending"], items["dead"]) == ("40", "0", "0", "1")
        assert float(items["writes/s"]) == 0.0
        assert streams[("main:copies", "-")]["length"] == "39"
    finally:
        run.send_signal(signal.SIGINT)
        run.wait(60)
    stopped = graphrun("status", str(graphs / "line.yaml"), cwd=elsewhere)
    assert stopped.returncode == 1
    assert "graph 'line' is not running" in stopped.stderr


def test_status_of_a_graph_never_started_exits_non_zero_saying_why(tmp_path: Path) -> None:
    (tmp_path / "line.yaml").write_text(LINE)
    done = graphrun("status", "line.yaml", cwd=tmp_path)
    assert done.returncode == 1 and done.stdout == ""
    assert "graph 'line' is not running" in done.stderr and "graphrun run" in done.stderr


# --- states, in this process ---------------------------------------------------------------------

RELAY = """\
name: t
agents:
  relay:
    type: sample_agents:Relay
    params: {{delay_ms: {delay_ms}}}
    inputs: {{items: "main:in"}}
    outputs: {{copies: main:out}}
"""


def test_a_live_graph_shows_its_rates_and_each_stream_s_backlog(redis_server, redis_client, graph_file, start_agent,
                                                                capsys) -> None:
    graph = graph_file(RELAY.format(delay_ms=20))
    start_agent(graph, "relay", health_interval=0.2)
    write_messages(redis_client, "in", [{"seq": i} for i in range(200)])  # 4 s of work at 50 a second
    wait_until(lambda: redis_client.xlen("out") >= 20, what="the relay to get going")
    code, out = status(capsys, graph.file, "--redis", f"main={redis_server.url}")
    assert code == 0, out
    relay = agent_row(out, "relay")
    assert relay["state"] == "running" and relay["replicas"] == "1/1"
    assert 10 <= float(relay["in/s"]) <= 55 and 10 <= float(relay["out/s"]) <= 55  # at most 50/s, handled in turn
    backlog = stream_rows(out)[("main:in", "relay")]
    assert backlog["length"] == "200"
    assert 0 < int(backlog["lag"]) + int(backlog["pending"]) < 200
    assert float(stream_rows(out)[("main:out", "-")]["writes/s"]) > 10


def test_entries_trimmed_before_a_slow_reader_read_them_are_shown(redis_server, redis_client, graph_file,
                                                                  start_agent, capsys) -> None:
    graph = graph_file(RELAY.format(delay_ms=0))
    transport.ensure_group(redis_client, "in", "relay")  # the reader is known, then away
    pipe = redis_client.pipeline()
    for _ in range(50):
        pipe.xadd("in", {"h": b""}, maxlen=10, approximate=False)
    pipe.execute()
    redis_client.xtrim("in", maxlen=0)  # what is left is dropped too: 50 trimmed before read
    start_agent(graph, "relay", health_interval=0.1)
    wait_until(lambda: "50" == agent_row(status(capsys, graph.file, "--redis", f"main={redis_server.url}")[1],
                                         "relay")["trimmed"], what="status showing the trimmed entries")


def test_watch_redraws_until_ctrl_c_and_then_exits_0(redis_server, graph_file, start_agent) -> None:
    graph = graph_file(RELAY.format(delay_ms=0))
    start_agent(graph, "relay", health_interval=0.2)
    watch = subprocess.Popen([sys.executable, "-m", "graphrun", "status", graph.file, "--watch",
                              "--redis", f"main={redis_server.url}"], env=ENV, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    time.sleep(5)  # a few redraws (a pipe gets the last table only, when the watch ends)
    watch.send_signal(signal.SIGINT)
    out, err = watch.communicate(timeout=60)
    assert watch.returncode == 0, err
    assert agent_row(out, "relay")["state"] == "running" and "Traceback" not in err


def test_a_hung_agent_s_old_heartbeat_shows_stale(redis_server, redis_client, graph_file, start_agent, capsys) -> None:
    graph = graph_file(RELAY.format(delay_ms=6000))  # handling one message takes 6 s: no heartbeat meanwhile
    start_agent(graph, "relay", health_interval=0.1)
    wait_until(lambda: redis_client.hget("graphrun:health:t:relay", "relay-0"), what="a first heartbeat")
    write_messages(redis_client, "in", [{"seq": 1}])
    running = connect(graph, {"main": redis_server.url})
    wait_until(lambda: Observer(running).agents()[0].state == "stale", what="two seconds (at least five intervals) of silence")
    code, out = status(capsys, graph.file, "--redis", f"main={redis_server.url}")
    relay = agent_row(out, "relay")
    assert (relay["state"], relay["replicas"]) == ("stale", "0/1")
    assert "no heartbeat for" in relay["why"] and "(was running)" in relay["why"]
    code, out = status(capsys, graph.file, "--redis", f"main={redis_server.url}", "--agent", "relay", "--check")
    assert code == 1 and "relay-0: unhealthy: stale (no heartbeat for" in out


def test_degraded_shows_the_reason_the_agent_gives(redis_server, graph_file, start_agent, capsys) -> None:
    graph = graph_file("""\
name: t
agents:
  camera: {type: test_status:Worried, outputs: {ticks: main:ticks}}
""")
    start_agent(graph, "camera", health_interval=0.1)
    running = connect(graph, {"main": redis_server.url})
    wait_until(lambda: Observer(running).agents()[0].state == "degraded", what="a degraded record")
    code, out = status(capsys, graph.file, "--redis", f"main={redis_server.url}")
    assert code == 0
    camera = agent_row(out, "camera")
    assert (camera["state"], camera["why"]) == ("degraded", "lens fogged up")
    code, out = status(capsys, graph.file, "--redis", f"main={redis_server.url}", "--agent", "camera", "--check")
    assert code == 1 and out.strip() == "camera-0: unhealthy: degraded (lens fogged up)"


def test_a_redis_the_agent_cannot_reach_shows_degraded_with_why(redis_server, graph_file, capsys) -> None:
    """Its input's Redis is down, its home Redis answers: the record says why it waits."""
    graph = graph_file("""\
name: t
nodes: {box: {redis: main}}
redis: {main: {}, cams: {}}
agents:
  relay: {type: sample_agents:Relay, node: box, inputs: {items: "cams:in"}, outputs: {copies: main:out}}
""")
    with RedisServer(name="cams") as cams:
        urls = {"main": redis_server.url, "cams": cams.url}
        runner = AgentRunner(graph, "relay", replica=0, redis_urls=urls, health_interval=0.1)
        thread = threading.Thread(target=runner.run, daemon=True)
        thread.start()
        try:
            running = connect(graph, {"main": redis_server.url})
            wait_until(lambda: Observer(running).agents()[0].state == "running", what="the relay running")
            cams.stop()
            wait_until(lambda: Observer(running).agents()[0].state == "degraded", what="the degraded record")
            code, out = status(capsys, graph.file, "--redis", f"main={redis_server.url}", "--redis", f"cams={cams.url}")
            assert code == 0
            relay = agent_row(out, "relay")
            assert relay["state"] == "degraded" and relay["why"].startswith("Redis unreachable: ")
            assert "Connection refused" in relay["why"] or "connecting" in relay["why"]
        finally:
            runner.request_stop()
            thread.join(30)


def test_starting_and_stopping_are_shown_while_they_last(redis_server, graph_file, start_agent, capsys,
                                                        tmp_path: Path) -> None:
    start_gate, stop_gate = tmp_path / "started", tmp_path / "stopped"
    graph = graph_file(f"""\
name: t
agents:
  slow: {{type: test_status:Slow, params: {{start_gate: "{start_gate}", stop_gate: "{stop_gate}"}},
          outputs: {{ticks: main:ticks}}}}
""")
    running = connect(graph, {"main": redis_server.url})

    def state() -> str:
        return Observer(running).agents()[0].state

    runner = start_agent(graph, "slow", health_interval=0.1)
    wait_until(lambda: state() == "starting", what="the starting record")
    code, out = status(capsys, graph.file, "--redis", f"main={redis_server.url}", "--agent", "slow", "--check")
    assert code == 1 and out.strip() == "slow-0: unhealthy: starting"
    start_gate.touch()
    wait_until(lambda: state() == "running", what="the start to end")
    code, out = status(capsys, graph.file, "--redis", f"main={redis_server.url}", "--agent", "slow", "--check")
    assert code == 0 and out.startswith("slow-0: running (heartbeat ")
    runner.request_stop()
    wait_until(lambda: state() == "stopping", what="the stopping record")
    stop_gate.touch()
    wait_until(lambda: state() == "stopped", what="the stopped record")


def test_restarts_are_counted_across_starts_of_the_same_consumer(redis_server, graph_file, start_agent) -> None:
    graph = graph_file("""\
name: t
agents:
  slow: {type: test_status:Slow, outputs: {ticks: main:ticks}}
""")
    running = connect(graph, {"main": redis_server.url})

    def view() -> AgentView:
        return Observer(running).agents()[0]

    for started in range(3):
        runner = start_agent(graph, "slow", health_interval=0.1)
        wait_until(lambda: view().state == "running", what="the agent running")
        assert view().restarts == started
        runner.request_stop()
        wait_until(lambda: view().state == "stopped", what="the agent stopped")


def test_check_answers_for_one_replica_and_refuses_without_an_agent(redis_server, graph_file, start_agent,
                                                                      capsys) -> None:
    graph = graph_file(RELAY.format(delay_ms=0))
    start_agent(graph, "relay", replica=1, health_interval=0.1)
    url = f"main={redis_server.url}"
    running = connect(graph, {"main": redis_server.url})
    wait_until(lambda: Observer(running).agents()[0].state == "running", what="the relay running")
    assert status(capsys, graph.file, "--redis", url, "--agent", "relay", "--replica", "1", "--check")[0] == 0
    code, out = status(capsys, graph.file, "--redis", url, "--agent", "relay", "--replica", "0", "--check")
    assert code == 1 and out.strip() == "relay-0: unhealthy: no heartbeat"
    code, out = status(capsys, graph.file, "--redis", url, "--check")
    assert code == 1 and "--check needs --agent NAME" in out
    code, out = status(capsys, graph.file, "--redis", url, "--agent", "nobody", "--check")
    assert code == 1 and "has no agent 'nobody'" in out


def test_check_of_an_agent_whose_redis_is_down_fails_saying_so(graph_file, capsys) -> None:
    graph = graph_file(RELAY.format(delay_ms=0))
    code, out = status(capsys, graph.file, "--redis", "main=redis://127.0.0.1:1/0", "--agent", "relay", "--check")
    assert code == 1 and out.startswith("relay: unhealthy: its Redis 'main' cannot be read")


# --- the container health check asks the same heartbeat ----------------------------------------


def image_health_check() -> list[str]:
    """The exec-form command of the Dockerfile's HEALTHCHECK."""
    from dockerfile_parse import DockerfileParser

    parser = DockerfileParser(str(TESTS.parent / "Dockerfile"))
    [check] = [i["value"] for i in parser.structure if i["instruction"] == "HEALTHCHECK"]
    assert "--interval=10s" in check and "--start-period=60s" in check
    return json.loads(check[check.index("CMD") + 3:])


def test_the_image_s_health_check_is_status_check_of_the_agent_its_container_names(
        redis_server, graph_file, start_agent) -> None:
    graph = graph_file(RELAY.format(delay_ms=0))
    command = image_health_check()
    env = {**ENV, "GRAPHRUN_REDIS_MAIN": redis_server.url, "GRAPHRUN_GRAPH": graph.file}
    env.pop("GRAPHRUN_AGENT", None)

    def health(**names: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(command, env={**env, **names}, capture_output=True, text=True, timeout=60, check=False)

    assert health().returncode == 0  # a container that runs no agent has nothing to check
    down = health(GRAPHRUN_AGENT="relay", GRAPHRUN_REPLICA="0")
    assert down.returncode == 1 and down.stdout.strip() == "relay-0: unhealthy: no heartbeat"
    start_agent(graph, "relay", health_interval=0.1)
    wait_until(lambda: health(GRAPHRUN_AGENT="relay").returncode == 0, what="a healthy agent")
    assert health(GRAPHRUN_AGENT="relay", GRAPHRUN_REPLICA="0").stdout.startswith("relay-0: running")


def test_each_compose_service_checks_its_own_replica_s_heartbeat(tmp_path: Path, redis_server, start_agent) -> None:
    graph_path = tmp_path / "relay.yaml"
    graph_path.write_text(RELAY.format(delay_ms=0).replace("type: sample_agents:Relay",
                                                              "type: sample_agents:Relay\n    replicas: 2"))
    assert main(["compose", str(graph_path), "--out", str(tmp_path / "out")]) == 0
    services = yaml.safe_load((tmp_path / "out" / "docker-compose.local.yml").read_text())["services"]
    checks = {name: services[name]["healthcheck"] for name in ("relay-0", "relay-1")}
    for index, check in enumerate(checks.values()):
        assert check["test"] == ["CMD", "graphrun", "status", "/graph/relay.yaml", "--agent", "relay",
                                 "--replica", str(index), "--check"]
        assert (check["interval"], check["start_period"]) == ("10s", "60s")

    def health(service: str) -> int:
        args = [str(graph_path) if a == "/graph/relay.yaml" else a for a in checks[service]["test"][2:]]
        env = {**ENV, "GRAPHRUN_REDIS_MAIN": redis_server.url}
        return subprocess.run(["graphrun", *args], env=env, capture_output=True, timeout=60, check=False).returncode

    start_agent(load_graph(graph_path), "relay", replica=1, health_interval=0.1)
    wait_until(lambda: health("relay-1") == 0, what="replica 1 healthy")
    assert health("relay-0") == 1  # its own replica is not running


# --- the HMI shows the same health -------------------------------------------------------------

HMI_LINE = """\
name: line
agents:
  hmi:
    type: hmi
    params: {port: 0}
    inputs:
      frames: {front: "main:cam.front.frames"}
      verdicts: {cls_front: "main:cls.front.verdicts"}
  relay:
    type: sample_agents:Relay
    params: {delay_ms: 3000}
    inputs: {items: "main:in"}
    outputs: {copies: main:out}
"""


def hmi_health(port: int) -> dict | None:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/state", timeout=10) as answer:
        return json.loads(answer.read())["health"]


def test_the_hmi_shows_each_agent_s_heartbeat_and_each_stream_s_backlog_stale_marked_stale(
        redis_server, redis_client, graph_file, start_agent, tmp_path: Path) -> None:
    graph = graph_file(HMI_LINE)
    hmi = start_agent(graph, "hmi", health_interval=0.1)
    start_agent(graph, "relay", health_interval=0.1)
    wait_until(lambda: "url" in hmi.status, what="the HMI's web server")
    port = hmi.agent.server.port
    write_messages(redis_client, "in", [{"seq": i} for i in range(5)])  # 3 s each: the relay hangs on them

    def shown() -> bool:
        health = hmi_health(port)
        agents = {a["name"]: a for a in health["agents"]} if health else {}
        return agents.get("relay", {}).get("state") == "stale" and agents["hmi"]["state"] == "running"

    wait_until(shown, what="the relay shown stale, the HMI running")
    health = hmi_health(port)
    assert health["stale"] is False and health["graph"] == "line"
    relay = next(a for a in health["agents"] if a["name"] == "relay")
    assert relay["stale"] is True and relay["replicas"] == [0, 1] and "no heartbeat" in relay["reason"]
    backlog = {(s["stream"], g["group"]): g for s in health["streams"] for g in s["groups"]}
    assert backlog[("main:in", "relay")]["lag"] == 0 and backlog[("main:in", "relay")]["pending"] >= 4
    assert backlog[("main:cam.front.frames", "hmi")] == {"group": "hmi", "lag": 0, "pending": 0}

    browser = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
    sync_api = pytest.importorskip("playwright.sync_api") if browser is not None else None
    if sync_api is not None:  # the page draws it: the relay's chip says stale, the backlog has its row
        with sync_api.sync_playwright() as p:  # the page keeps its event stream open: a live page, not a DOM dump
            chromium = p.chromium.launch(executable_path=browser, headless=True, args=["--no-sandbox", "--disable-gpu"])
            try:
                page = chromium.new_page()
                page.goto(f"http://127.0.0.1:{port}/")
                page.wait_for_selector('span.chip.stale[data-agent="relay"]', timeout=30_000)
                dom = page.content()
            finally:
                chromium.close()
        assert ">relay · stale<" in dom
        assert '<span class="chip running" data-agent="hmi"' in dom
        assert re.search(r'<tr data-stream="main:in" data-group="relay"><td>main:in</td><td>relay</td>'
                         r'<td>0</td><td>[1-5]</td></tr>', dom)

    redis_server.stop()  # the graph's Redis gone: the last look is still shown, marked stale
    wait_until(lambda: hmi_health(port)["stale"] is True, what="the health marked stale")
    assert {a["name"] for a in hmi_health(port)["agents"]} == {"hmi", "relay"}
