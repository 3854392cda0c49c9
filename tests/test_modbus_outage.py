"""End to end: verdicts on real Redis streams, the agent under the runner, a PLC outage in the middle."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
import redis
from graphrun.graph import parse_graph
from graphrun.redis_server import RedisServer
from graphrun.runner import AgentRunner
from graphrun_agents.modbus.regmap import RegisterMap
from graphrun_agents.modbus.simulator import PlcSimulator, free_port
from plc_helpers import every_verdict_handled, send_part, wait_for

PARTS = 500
GRAPH = """
name: plc-outage
redis: {{main: {{url: "{url}"}}}}
agents:
  plc:
    type: modbus
    params: {{host: 127.0.0.1, port: {port}, timeout: 0.2, reconnect_min: 0.05, reconnect_max: 0.2}}
    inputs:
      front: main:verdicts.front
      back: main:verdicts.back
"""


@pytest.fixture
def running() -> Iterator[tuple[PlcSimulator, AgentRunner, redis.Redis]]:
    with RedisServer(name="plc-outage") as server, PlcSimulator(RegisterMap()) as plc:
        graph = parse_graph(GRAPH.format(url=server.url, port=plc.port), "plc-outage.yaml")
        runner = AgentRunner(graph, "plc")
        thread = threading.Thread(target=runner.run, name="plc-agent", daemon=True)
        thread.start()
        client = redis.Redis.from_url(server.url)
        try:
            yield plc, runner, client
        finally:
            runner.request_stop()
            thread.join(10)
            client.close()


def test_a_plc_outage_in_the_middle_of_500_parts_loses_repeats_and_reorders_nothing(
    running: tuple[PlcSimulator, AgentRunner, redis.Redis],
) -> None:
    plc, runner, client = running
    for part_id in range(1, 201):
        send_part(client, part_id)
    wait_for(lambda: len(plc.results) == 200, "the first 200 results")

    plc.stop()
    for part_id in range(201, 351):
        send_part(client, part_id)
    wait_for(lambda: str(runner.status.get("plc", "")).startswith("unreachable"), "the agent to see the outage")
    pending = client.xpending("verdicts.front", "plc")["pending"]
    assert pending > 0  # verdicts of parts not yet written are not acknowledged

    plc.start()
    for part_id in range(351, PARTS + 1):
        send_part(client, part_id)
    wait_for(lambda: every_verdict_handled(client), "every verdict to be handled and acknowledged")

    assert [r.values["part_id"] for r in plc.results] == list(range(1, PARTS + 1))
    assert [r.sequence for r in plc.results] == list(range(1, PARTS + 1))
    assert [r.values["outcome"] for r in plc.results] == [int(p % 7 == 0) for p in range(1, PARTS + 1)]


def test_verdicts_held_when_the_agent_stops_are_written_once_by_its_successor() -> None:
    with RedisServer(name="plc-restart") as server, PlcSimulator(RegisterMap()) as plc:
        graph = parse_graph(GRAPH.format(url=server.url, port=plc.port), "plc-restart.yaml")
        client = redis.Redis.from_url(server.url)
        first = AgentRunner(graph, "plc")
        thread = threading.Thread(target=first.run, daemon=True)
        thread.start()
        for part_id in range(1, 11):
            send_part(client, part_id)
        wait_for(lambda: len(plc.results) == 10, "the first 10 results")
        plc.stop()
        for part_id in range(11, 21):
            send_part(client, part_id)
        # Every verdict of the parts that could not be written is received and held, not acknowledged.
        wait_for(lambda: all(client.xpending(f"verdicts.{v}", "plc")["pending"] == 10 for v in ("front", "back")),
                 "the agent to hold the verdicts of parts 11-20")
        assert str(first.status.get("plc", "")).startswith("unreachable")
        first.request_stop()
        thread.join(10)

        plc.start()
        second = AgentRunner(graph, "plc")
        thread = threading.Thread(target=second.run, daemon=True)
        thread.start()
        try:
            for part_id in range(21, 31):
                send_part(client, part_id)
            wait_for(lambda: every_verdict_handled(client), "every verdict to be handled and acknowledged")
            assert [r.values["part_id"] for r in plc.results] == list(range(1, 31))
            assert [r.sequence for r in plc.results] == list(range(1, 31))
        finally:
            second.request_stop()
            thread.join(10)
            client.close()


def test_the_plc_host_may_come_from_the_environment() -> None:
    text = GRAPH.format(url="redis://127.0.0.1:1", port=502).replace("host: 127.0.0.1,", 'host: "${PLC_HOST}",')
    graph = parse_graph(text, "plant.yaml", environ={"PLC_HOST": "10.20.30.40"})
    assert graph.agents["plc"].settings.host == "10.20.30.40"


SIM_GRAPH = """
name: plc-demo
redis: {{main: {{url: "{url}"}}}}
agents:
  plc_sim:
    type: graphrun_agents.modbus.sim_agent:PlcSimAgent
    params: {{port: {port}, quiet: true}}
  plc:
    type: modbus
    params: {{host: 127.0.0.1, port: {port}}}
    inputs:
      front: main:verdicts.front
      back: main:verdicts.back
"""


def test_a_graph_can_run_the_plc_simulator_as_one_of_its_agents() -> None:
    with RedisServer(name="plc-demo") as server:
        graph = parse_graph(SIM_GRAPH.format(url=server.url, port=free_port()), "plc-demo.yaml")
        simulator, agent = AgentRunner(graph, "plc_sim"), AgentRunner(graph, "plc")
        threads = [threading.Thread(target=simulator.run, daemon=True)]
        threads[0].start()
        wait_for(lambda: "listening" in simulator.status, "the simulator to listen")
        threads.append(threading.Thread(target=agent.run, daemon=True))
        threads[1].start()
        client = redis.Redis.from_url(server.url)
        try:
            for part_id in (1, 2, 3):
                send_part(client, part_id)
            wait_for(lambda: simulator.status.get("results") == 3, "three results at the simulator")
        finally:
            simulator.request_stop()
            agent.request_stop()
            for thread in threads:
                thread.join(10)
            client.close()
