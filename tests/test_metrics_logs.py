"""Metrics and logs: what a plant's Prometheus scrapes from each agent process, and what
its log shipper reads from each agent's output."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import redis
from conftest import wait_until
from graphrun import codec
from graphrun.errors import GraphError
from graphrun.graph import load_graph, parse_graph
from graphrun.health import Counters
from graphrun.message import Message
from graphrun.metrics import AgentCollector, AgentMetrics
from graphrun.redis_server import RedisServer, free_port
from graphrun.testing import AgentHarness
from graphrun_agents.modbus.agent import ModbusAgent
from graphrun_agents.modbus.sim_agent import PlcSimAgent
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

GRAPH = """
name: metered
redis: {{main: {{url: "{url}"}}}}
agents:
  doubler:
    type: examples.doubler
    inputs: {{numbers: main:numbers}}
    outputs:
      doubled: {{stream: doubled}}
  quiet_doubler:
    type: examples.doubler
    log_level: error
    inputs: {{numbers: main:numbers}}
    outputs:
      doubled: {{stream: doubled.quiet}}
"""

LINE = """
name: logged
redis: {main: {}}
agents:
  counter:
    type: examples.counter
    params: {rate: 50, count: 5}
    outputs:
      numbers: {stream: numbers}
  printer:
    type: examples.printer
    inputs: {values: counter.numbers}
"""

JSON_KEYS = {"time", "level", "agent", "logger", "message"}


def graphrun(*args: str) -> list[str]:
    return [sys.executable, "-m", "graphrun", *args]


@pytest.fixture
def graph_path(tmp_path: Path, redis_server: RedisServer) -> Path:
    path = tmp_path / "metered.yaml"
    path.write_text(GRAPH.format(url=redis_server.url))
    return path


@pytest.fixture
def agent_process(graph_path: Path) -> Iterator[tuple[subprocess.Popen[str], int]]:
    """``graphrun agent`` for the doubler, serving metrics and logging JSON lines."""
    port = free_port()
    process = subprocess.Popen(
        graphrun("agent", str(graph_path), "doubler", "--replica", "0", "--metrics-port", str(port),
                 "--log-format", "json", "--log-level", "DEBUG"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    yield process, port
    if process.poll() is None:
        process.kill()
        process.communicate()


def scrape(port: int) -> dict[str, float]:
    """Every sample of the endpoint, keyed ``name{label=value,...}`` without the graph,
    agent and consumer labels; the text must parse as Prometheus exposition format."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = {k: v for k, v in sample.labels.items() if k not in ("graph", "agent", "consumer")}
            key = sample.name + ("{" + ",".join(f"{k}={v}" for k, v in sorted(labels.items())) + "}" if labels else "")
            samples[key] = sample.value
    return samples


def scraped(port: int) -> dict[str, float] | None:
    try:
        return scrape(port)
    except OSError:
        return None  # not listening yet


def send(client: redis.Redis, stream: str, count: int, *, age: float = 0.0) -> None:
    """``count`` numbers whose chain began ``age`` seconds ago."""
    origin = time.time() - age
    pipe = client.pipeline(transaction=False)
    for n in range(count):
        pipe.xadd(stream, codec.encode(Message({"value": n, "seq": n}, producer="test", created=origin)))
    pipe.execute()


def test_a_scrape_counts_what_the_agent_received_sent_and_dead_lettered(
        agent_process: tuple[subprocess.Popen[str], int], redis_client: redis.Redis) -> None:
    _, port = agent_process
    wait_until(lambda: scraped(port) is not None, what="the metrics endpoint")
    send(redis_client, "numbers", 20, age=2.0)
    redis_client.xadd("numbers", {b"h": b"not json"})  # malformed: dead-lettered
    wait_until(lambda: (scraped(port) or {}).get("graphrun_messages_received_total") == 21, what="21 received")
    # Lag and pending are read with the health record, every two seconds.
    wait_until(lambda: (scraped(port) or {}).get("graphrun_input_lag{input=numbers}") == 0, what="lag 0")

    samples = scrape(port)
    assert samples["graphrun_messages_sent_total"] == 20
    assert samples["graphrun_messages_handled_total"] == 20
    assert samples["graphrun_messages_dead_lettered_total"] == 1
    assert samples["graphrun_handling_errors_total"] == 0
    assert samples["graphrun_input_pending{input=numbers}"] == 0
    assert samples["graphrun_handling_seconds_count"] == 20
    assert 0 < samples["graphrun_handling_seconds_sum"] < 20
    # Latency runs from the chain's origin (two seconds before the test sent them), not from
    # when this agent received them.
    assert samples["graphrun_latency_seconds_count"] == 20
    assert samples["graphrun_latency_seconds_bucket{le=1.0}"] == 0
    assert samples["graphrun_latency_seconds_bucket{le=+Inf}"] == 20
    assert samples["graphrun_latency_seconds_sum"] >= 40
    assert redis_client.xlen("numbers:dead") == 1


def test_json_log_lines_each_parse_and_name_the_agent(agent_process: tuple[subprocess.Popen[str], int],
                                                      redis_client: redis.Redis) -> None:
    process, port = agent_process
    wait_until(lambda: scraped(port) is not None, what="the metrics endpoint")
    redis_client.xadd("numbers", {b"h": b"not json"})  # an ERROR line
    wait_until(lambda: redis_client.exists("numbers:dead"), what="the dead letter")
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=30)

    records = [json.loads(line) for line in err.splitlines() if line.strip()]
    assert records and all(JSON_KEYS <= set(r) for r in records)
    assert {r["agent"] for r in records} == {"doubler"}
    levels = {r["level"] for r in records}
    assert {"INFO", "ERROR"} <= levels
    assert any("started as consumer" in r["message"] for r in records)
    assert any(r["logger"] == "graphrun.runner" and "dead-lettered" in r["message"] for r in records)


def test_an_agent_s_log_level_in_the_graph_wins_over_the_command_line(graph_path: Path) -> None:
    def output(agent: str) -> str:
        done = subprocess.run(graphrun("agent", str(graph_path), agent, "--duration", "0.5", "--log-level", "DEBUG"),
                              check=False, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stderr

    assert "started as consumer" in output("doubler")  # INFO, at the command line's DEBUG
    assert output("quiet_doubler") == ""  # log_level: error, nothing went wrong


def test_a_log_level_that_is_no_level_is_a_problem_at_its_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(GRAPH.format(url="redis://127.0.0.1:1").replace("log_level: error", "log_level: loud"))
    with pytest.raises(GraphError) as caught:
        load_graph(path)
    [problem] = caught.value.problems
    assert str(problem).endswith("bad.yaml:12:16: Input should be 'DEBUG', 'INFO', 'WARNING' or 'ERROR' "
                                 "(got 'loud') (agents.quiet_doubler.log_level)")


def test_a_taken_metrics_port_stops_the_agent_as_unable_to_start(graph_path: Path,
                                                                 redis_server: RedisServer) -> None:
    busy = str(urlsplit(redis_server.url).port)  # a port something already listens on
    done = subprocess.run(graphrun("agent", str(graph_path), "doubler", "--metrics-port", busy),
                          check=False, capture_output=True, text=True, timeout=60)
    assert done.returncode == 78  # EXIT_CONFIG: the launcher does not restart it in a loop
    assert f"cannot serve metrics on 127.0.0.1:{busy}" in done.stderr


def test_graphrun_run_writes_a_log_file_per_agent_and_numbers_the_metrics_ports(tmp_path: Path) -> None:
    graph = tmp_path / "logged.yaml"
    graph.write_text(LINE)
    logs, base = tmp_path / "logs", free_port()
    done = subprocess.run(
        graphrun("run", str(graph), "--duration", "6", "--state-dir", str(tmp_path / "state"),
                 "--log-dir", str(logs), "--metrics-port", str(base)),
        check=False, capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"metrics of counter: http://127.0.0.1:{base}/metrics" in done.stdout
    assert f"metrics of printer: http://127.0.0.1:{base + 1}/metrics" in done.stdout

    assert sorted(p.name for p in logs.iterdir()) == ["counter.log", "printer.log"]
    counter, printer = (logs / "counter.log").read_text(), (logs / "printer.log").read_text()
    assert "agent counter started as consumer" in counter and "printer" not in counter
    assert printer.count("values: {'value': ") == 5  # what agent code printed is kept too
    assert " | " not in printer  # the file has the agent's own lines, not the launcher's prefixes


def test_the_plc_simulator_logs_each_result_at_debug_a_periodic_count_at_info_and_prints_nothing(
        caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]) -> None:
    """A result a second at INFO would bury every other line of a run: each result is a
    DEBUG line, and an INFO line counts the results by outcome every summary_interval."""
    port = free_port()
    verdicts = [{"part_id": part_id, "camera": "front", "defective": part_id == 77, "label": "chip", "score": 0.8,
                 "threshold": 0.5, "model": "m", "model_version": "1", "backend": "onnxruntime",
                 "preprocess_ms": 1.0, "inference_ms": 1.0} for part_id in (76, 77, 78)]
    caplog.set_level(logging.DEBUG, logger="graphrun.agent.plc_sim")
    with AgentHarness(PlcSimAgent, name="plc_sim", params={"port": port, "summary_interval": 0.5}) as sim:
        with AgentHarness(ModbusAgent, params={"host": "127.0.0.1", "port": port},
                          groups={"verdicts": ["front"]}) as plc:
            for verdict in verdicts:
                plc.send("front", verdict)
            wait_until(lambda: sim.agent.status.get("results") == 3, what="the results at the simulator")
        def counted() -> bool:
            sim.produce()  # the agent's loop: half a second each
            return any(r.levelname == "INFO" for r in caplog.records if r.name == "graphrun.agent.plc_sim")
        wait_until(counted, what="the simulator's count of the results")
        assert sim.agent.status["outcomes"] == {"ok": 2, "defective": 1}
    lines = [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "graphrun.agent.plc_sim"]
    assert [m for level, m in lines if level == "DEBUG"] == [
        "result 1: part 76, ok", "result 2: part 77, defective", "result 3: part 78, ok"]
    assert [m for level, m in lines if level == "INFO"] == [
        "3 result(s) in the last 0.5 s (1 defective, 2 ok); 3 in all"]
    assert capsys.readouterr().out == ""


def test_the_line_s_dashboard_asks_only_for_series_an_agent_exposes() -> None:
    root = Path(__file__).parent.parent
    dashboard = json.loads((root / "deploy/grafana/finger_follower.json").read_text())
    metrics = AgentMetrics(graph="finger_follower", agent="plc", consumer="plc-0", counters=Counters(), inputs={})
    metrics.backlog = {"front": (0, 0)}
    registry = CollectorRegistry()
    registry.register(AgentCollector(metrics))
    exposed = {sample.name for family in text_string_to_metric_families(generate_latest(registry).decode())
               for sample in family.samples}

    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    asked = {name for expr in exprs for name in re.findall(r"graphrun_[a-z_]+", expr)}
    assert asked and asked <= exposed, asked - exposed
    assert {"graphrun_messages_received_total", "graphrun_messages_sent_total", "graphrun_handling_errors_total",
            "graphrun_messages_dead_lettered_total", "graphrun_latency_seconds_bucket", "graphrun_input_lag"} <= asked
    name = load_graph(root / "graphs/finger_follower.yaml").name
    assert all(f'graph="{name}"' in expr for expr in exprs)


def test_lag_and_pending_of_an_input_whose_stream_is_gone_are_left_out(redis_server: RedisServer,
                                                                       redis_client: redis.Redis) -> None:
    graph = parse_graph(GRAPH.format(url=redis_server.url), "metered.yaml")
    metrics = AgentMetrics(graph="metered", agent="doubler", consumer="doubler-0", counters=Counters(),
                           inputs=graph.agents["doubler"].inputs)
    metrics.serving = True
    clients = {"main": redis_client}
    metrics.read_backlog(clients, "doubler")  # no stream yet (a Redis that restarted empty): no error
    assert metrics.backlog == {}

    redis_client.xgroup_create("numbers", "doubler", id="0", mkstream=True)
    send(redis_client, "numbers", 3)
    redis_client.xreadgroup("doubler", "doubler-0", {"numbers": ">"}, count=1)
    metrics.read_backlog(clients, "doubler")
    assert metrics.backlog == {"numbers": (2, 1)}
