"""When a run stops (Ctrl-C), `graphrun run` prints one line saying what the run did.

The runtime knows nothing of parts: agents name what they count in their status under
``counts``, and the line adds those up beside the errors, dead letters and restarts of
every agent's health record. Against a real launcher process, stopped with SIGINT.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import wait_until
from graphrun.tally import RunTally, duration

TESTS = Path(__file__).parent

COUNTING_AGENT = '''
from graphrun import Agent, Input, Message


class Counting(Agent):
    """Counts the items it gets, and the odd ones, as a line's sink counts parts and rejects."""

    items = Input(dict)

    def start(self) -> None:
        self.status["counts"] = {"items": 0, "odd": 0}

    def handle(self, msg: Message) -> None:
        counts = self.status["counts"]
        self.status["counts"] = {"items": counts["items"] + 1, "odd": counts["odd"] + msg["seq"] % 2}
'''

GRAPH = """
name: summary
redis:
  main: {}
agents:
  source:
    type: sample_agents:Source
    params: {count: 40}
    outputs: {items: main:items}
  relay:
    type: sample_agents:Relay
    params: {reject: [3, 4, 5], poison: [7]}
    inputs:
      items: {from: source.items, max_deliveries: 2}
    outputs: {copies: main:copies}
  counting:
    type: counting:Counting
    inputs: {items: relay.copies}
"""


def test_ctrl_c_prints_one_line_with_the_agents_counts_the_errors_dead_letters_and_restarts(tmp_path: Path) -> None:
    (tmp_path / "counting.py").write_text(COUNTING_AGENT)
    graph = tmp_path / "summary.yaml"
    graph.write_text(GRAPH)
    env = {**os.environ, "PYTHONPATH": str(TESTS), "PYTHONUNBUFFERED": "1"}
    log = tmp_path / "out.txt"
    with log.open("w") as out:
        launcher = subprocess.Popen([sys.executable, "-m", "graphrun", "run", str(graph)], stdout=out,
                                    stderr=subprocess.STDOUT, env=env, cwd=tmp_path)
        try:
            # 40 items: 3 rejected and 1 poisoned (failed twice, then dead-lettered) by the relay.
            wait_until(lambda: "agent counting started" in log.read_text(), timeout=90, what="the graph")
            wait_until(lambda: "dead-lettered" in log.read_text() and "poison item 7" in log.read_text(),
                       timeout=60, what="the poisoned item's dead letter")
            time.sleep(3)  # the rest of the 40 items through
            launcher.send_signal(signal.SIGINT)
            assert launcher.wait(60) == 0
        finally:
            if launcher.poll() is None:
                launcher.kill()
                launcher.wait()
    text = log.read_text()
    lines = [line for line in text.splitlines() if line.startswith("graphrun: run of ")]
    assert len(lines) == 1, text
    assert re.fullmatch(r"graphrun: run of \d+ s: counting: 36 items, 17 odd; 2 errors, 4 dead letters, 0 restarts",
                        lines[0]), lines[0]
    assert text.rstrip().splitlines()[-1] == lines[0]  # the run's last word


def test_the_line_names_each_count_and_says_when_restarts_reset_them() -> None:
    tally = RunTally(seconds=125.4, counts={"plc": {"parts": 480, "rejects": 37}, "hmi": {}}, errors=1,
                     dead_letters=0, restarts=2)
    assert tally.line() == ("run of 2 min 5 s: plc: 480 parts, 37 rejects; 1 error, 0 dead letters, 2 restarts "
                            "(counts since each replica's last start)")
    assert duration(3 * 3600 + 61) == "3 h 1 min"
