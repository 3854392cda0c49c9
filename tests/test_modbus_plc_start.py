"""The Modbus agent starts without its PLC, holds every verdict while it waits, and writes
as soon as the PLC listens: against a real redis-server and the real PLC simulator."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest
import redis

from conftest import caught_up, wait_until, write_messages
from graphrun.graph import parse_graph
from graphrun.health import health_key
from graphrun.redis_server import RedisServer
from graphrun.runner import AgentRunner
from graphrun_agents.modbus.layout import Request
from graphrun_agents.modbus.plc import PlcLink
from graphrun_agents.modbus.regmap import RegisterMap
from graphrun_agents.modbus.simulator import PlcSimulator, free_port

GRAPH = """
name: plc-late
redis: {{main: {{url: "{url}"}}}}
agents:
  plc:
    type: modbus
    params: {{host: 127.0.0.1, port: {port}, timeout: 0.3}}
    inputs:
      front: main:verdicts.front
      back: main:verdicts.back
"""


def verdict(part_id: int, view: str) -> dict:
    return {
        "part_id": part_id, "camera": view, "defective": part_id % 3 == 0, "label": "ok", "score": 0.2,
        "threshold": 0.5, "model": "m", "model_version": "1", "backend": "onnxruntime",
        "preprocess_ms": 1.0, "inference_ms": 1.0,
    }


def send_parts(client: redis.Redis, part_ids: range) -> None:
    for view in ("front", "back"):
        write_messages(client, f"verdicts.{view}", [verdict(p, view) for p in part_ids], producer=f"cls_{view}")


@dataclass
class Running:
    """The agent under the runner in a thread, with whatever its run raised."""

    runner: AgentRunner
    thread: threading.Thread
    client: redis.Redis
    port: int
    failure: list[BaseException] = field(default_factory=list)
    statuses: set[str] = field(default_factory=set)

    def watch(self, until: Callable[[], bool]) -> None:
        """Wait for ``until`` while recording every PLC state the health record showed."""
        def seen() -> bool:
            self.statuses.add(str(self.runner.status.get("plc")))
            return until()
        wait_until(seen, what="the agent")

    def pending(self) -> int:
        return sum(self.client.xpending(f"verdicts.{v}", "plc")["pending"] for v in ("front", "back"))


@pytest.fixture
def launch(redis_server: RedisServer, redis_client: redis.Redis) -> Iterator[Callable[[int], Running]]:
    """Start the agent for a PLC on ``port`` (listening or not); it is stopped at teardown."""
    started: list[Running] = []

    def start(port: int) -> Running:
        runner = AgentRunner(parse_graph(GRAPH.format(url=redis_server.url, port=port), "plc-late.yaml"), "plc")
        running = Running(runner, threading.Thread(), redis_client, port)

        def run() -> None:
            try:
                runner.run()
            except BaseException as exc:  # the tests assert there is none
                running.failure.append(exc)

        running.thread = threading.Thread(target=run, name="plc-agent", daemon=True)
        running.thread.start()
        started.append(running)
        return running

    yield start
    for running in started:
        running.runner.request_stop()
        running.thread.join(10)


def test_an_agent_started_before_its_plc_waits_holds_the_verdicts_and_writes_them_when_the_plc_listens(
    launch: Callable[[int], Running],
) -> None:
    agent = launch(free_port())
    wait_until(agent.runner.started.is_set, what="the agent's start to return although no PLC listens")
    assert str(agent.runner.status.get("plc")).startswith("waiting for PLC")
    send_parts(agent.client, range(1, 21))
    agent.watch(lambda: agent.pending() == 40)  # every verdict received and held, none acknowledged
    time.sleep(1.0)  # several reconnection attempts while the PLC is still down
    assert agent.pending() == 40 and agent.thread.is_alive() and not agent.failure
    assert str(agent.runner.status.get("plc")).startswith("waiting for PLC")

    with PlcSimulator(RegisterMap(), port=agent.port) as plc:
        returned = time.monotonic()
        agent.watch(lambda: len(plc.results) == 20)
        resumed_after = time.monotonic() - returned
        agent.watch(lambda: all(caught_up(agent.client, f"verdicts.{v}", "plc") for v in ("front", "back")))
        assert [r.values["part_id"] for r in plc.results] == list(range(1, 21))
        assert [r.sequence for r in plc.results] == list(range(1, 21))
        assert [r.values["outcome"] for r in plc.results] == [int(p % 3 == 0) for p in range(1, 21)]
    # Polled about every half second while waiting: the results follow the PLC's return
    # promptly, not after a launcher's restart backoff (seconds).
    assert resumed_after < 2.0, f"the first results reached the PLC {resumed_after:.1f} s after it listened"
    assert agent.runner.status["plc"] == "connected" or agent.runner.status["plc"].startswith("unreachable")
    assert agent.thread.is_alive() and not agent.failure, f"the agent's run ended: {agent.failure}"


def test_a_part_the_plc_already_shows_when_it_returns_is_not_written_again(launch: Callable[[int], Running]) -> None:
    """A crash after a write and before its acknowledgement, and the PLC down at the restart:
    the redelivered verdicts of the part the PLC shows are acknowledged, not written twice."""
    plc = PlcSimulator(RegisterMap())
    with plc:  # the last run wrote part 7 as result 5
        link = PlcLink(plc.host, plc.port, plc.unit, allowed={"holding": frozenset(range(100, 104)), "coil": frozenset()})
        link.write(Request("holding", 100, (5, 0, 7, 0), ("sequence", "part_id", "outcome")))
        link.close()
    agent = launch(plc.port)
    wait_until(agent.runner.started.is_set, what="the agent's start")
    send_parts(agent.client, range(7, 10))
    agent.watch(lambda: agent.pending() == 6)
    with plc:  # back, with the registers it held
        agent.watch(lambda: agent.pending() == 0)
        assert [(r.sequence, r.values["part_id"]) for r in plc.results] == [(5, 7), (6, 8), (7, 9)]
    assert agent.thread.is_alive() and not agent.failure


def health_record(client: redis.Redis) -> dict:
    """The agent's one replica's health record (its consumer name is the machine's)."""
    records = [json.loads(raw) for raw in client.hgetall(health_key("plc-late", "plc")).values()]
    return records[0] if records else {}


def test_a_plc_not_listening_yet_is_a_degraded_state_with_its_reason_not_a_crash(
    launch: Callable[[int], Running],
) -> None:
    """The health record, what `graphrun status` and the HMI show, says what the agent waits for."""
    agent = launch(free_port())
    wait_until(lambda: health_record(agent.client).get("state") == "degraded", what="a degraded health record")
    record = health_record(agent.client)
    assert record["reason"] == f"waiting for PLC at 127.0.0.1:{agent.port}"
    assert record["plc"] == "waiting for PLC"
    with PlcSimulator(RegisterMap(), port=agent.port):
        wait_until(lambda: health_record(agent.client).get("state") == "running", what="a running health record")
        assert "reason" not in health_record(agent.client)
    send_parts(agent.client, range(1, 2))  # the link is found down at the next write
    wait_until(lambda: health_record(agent.client).get("state") == "degraded", what="degraded again, PLC gone")
    assert health_record(agent.client)["reason"].startswith("unreachable: ")
    assert agent.thread.is_alive() and not agent.failure, f"the agent's run ended: {agent.failure}"
