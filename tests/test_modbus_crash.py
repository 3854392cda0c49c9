"""The Modbus agent killed between the two writes of one result loses no part.

With a register map whose data registers are apart from the sequence counter, a result
takes more than one write request. The PLC simulator here holds back the write that
carries the counter (it never answers it), the agent, a real ``graphrun agent`` process,
is killed with SIGKILL while it waits for that reply, and its successor starts against
the same PLC and Redis. The part in flight must reach the PLC.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from graphrun.redis_server import RedisServer
from graphrun_agents.modbus.regmap import RegisterMap
from graphrun_agents.modbus.simulator import PlcSimulator
from test_modbus_outage import every_verdict_handled, send_part, wait_for

#: The counter and the part id at 100-102, the outcome and the score far from them.
SPLIT_MAP = {"sequence": {"address": 100}, "part_id": {"address": 101, "encoding": "uint32"},
             "outcome": {"address": 200}, "score": {"address": 300, "encoding": "float32"}}
#: Every entry apart: the part id cannot go in one request with the counter.
APART_MAP = {**SPLIT_MAP, "part_id": {"address": 500, "encoding": "uint32"}}

GRAPH = """
name: plc-crash
redis: {{main: {{url: "{url}"}}}}
agents:
  plc:
    type: modbus
    params: {{host: 127.0.0.1, port: {port}, timeout: 60, retries: 0, map: {regmap}}}
    inputs:
      front: main:verdicts.front
      back: main:verdicts.back
"""


class CounterStallingPlc(PlcSimulator):
    """A PLC that, once ``stall`` is set, never answers a write reaching the counter and
    never applies it: the agent waits in the middle of a result, as when it is killed there."""

    def __init__(self, regmap: RegisterMap):
        super().__init__(regmap)
        self.stall = False
        self.stalled = threading.Event()  # a write of the counter is being held back
        self._closing = False

    async def _action(self, function_code: int, start: int, address: int, count: int, registers: list[int],
                      values: list[int] | list[bool] | None) -> None:
        seq = self.map.sequence
        reaches_counter = values and address <= seq.last and seq.address <= address + len(values) - 1
        if self.stall and reaches_counter:
            self.stalled.set()
            while not self._closing:  # held until the simulator stops; its writer is dead by then
                await asyncio.sleep(0.05)
            return None
        return await super()._action(function_code, start, address, count, registers, values)

    def stop(self) -> None:
        self._closing = True
        super().stop()


@pytest.fixture(params=[SPLIT_MAP, APART_MAP], ids=["part-id-beside-the-counter", "every-entry-apart"])
def line(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[tuple[Path, CounterStallingPlc, redis.Redis]]:
    regmap = RegisterMap.model_validate(request.param)
    with RedisServer(name="plc-crash") as server:
        plc = CounterStallingPlc(regmap).start()
        path = tmp_path / "plc-crash.yaml"
        path.write_text(GRAPH.format(url=server.url, port=plc.port, regmap=request.param))
        client = redis.Redis.from_url(server.url)
        try:
            yield path, plc, client
        finally:
            client.close()
            plc.stop()


def agent(path: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "graphrun", "agent", str(path), "plc", "--log-level", "WARNING"])


def test_an_agent_killed_between_the_data_write_and_the_counter_write_loses_no_part(
    line: tuple[Path, CounterStallingPlc, redis.Redis],
) -> None:
    path, plc, client = line
    first = agent(path)
    second = None
    try:
        send_part(client, 1)
        wait_for(lambda: len(plc.results) == 1, "part 1 on the PLC", limit=120)
        plc.stall = True
        send_part(client, 2)
        wait_for(plc.stalled.is_set, "the write of part 2's counter", limit=60)
        first.send_signal(signal.SIGKILL)  # its data write done, its counter write unanswered
        first.wait(10)
        plc.stall = False
        second = agent(path)
        send_part(client, 3)
        wait_for(lambda: every_verdict_handled(client), "every verdict to be handled and acknowledged", limit=120)
    finally:
        for process in (first, second):
            if process is not None and process.poll() is None:
                process.terminate()
                process.wait(10)
    assert [r.values["part_id"] for r in plc.results] == [1, 2, 3]
    assert [r.sequence for r in plc.results] == [1, 2, 3]
