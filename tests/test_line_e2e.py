"""The finger-follower line end to end: graphs/finger_follower.yaml under `graphrun run`.

N synthetic parts go through the real graph (trigger, two cameras, two classifiers with
the shipped model, the Modbus agent, the HMI), each agent its own process on its own
Redis, as `graphrun graphs/finger_follower.yaml` runs them. The PLC is a real Modbus TCP
server (the PLC simulator) in this test's process instead of the graph's plc_sim agent,
so the test sees every write the PLC took. Checked:

- every part reaches the PLC exactly once and in order, by the PLC's sequence counter;
- each part's outcome agrees with the synthetic ground truth (the renderer's, drawn again
  here from the cameras' seeds) at the accuracy the model card states;
- the HMI's /api/state counts the same parts and rejects as the PLC;
- the archive holds exactly the rejected parts, each with its PLC sequence number;
- the run's summary line at Ctrl-C counts the same parts and rejects too.

Two settings of the shipped graph are widened for a busy 2-core machine, where the graph's
own processes start in turn for several seconds: a trigger older than 1 s is skipped by a
camera (trigger_max_age), and a part missing a view for 3 s is written "incomplete"
(join_timeout). Both are the line's designed answers to a stalled camera; here they would
only measure the machine's load, so they are set to a minute.
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import wait_until
from graphrun_agents.archive.index import Index
from graphrun_agents.camera.synthetic import SyntheticConfig, render_part
from graphrun_agents.modbus.regmap import RegisterMap
from graphrun_agents.modbus.simulator import PlcSimulator, free_port

ROOT = Path(__file__).resolve().parent.parent
GRAPH = ROOT / "graphs" / "finger_follower.yaml"
MODEL_CARD = ROOT / "agents" / "classification" / "models" / "MODEL_CARD.md"
PARTS = 40
OK, DEFECTIVE = RegisterMap().outcomes.ok, RegisterMap().outcomes.defective


def card_accuracy() -> float:
    """The held-out accuracy per frame that the model card states (bold in its results table)."""
    found = re.search(r"^\| accuracy \| \*\*([\d.]+)%\*\*", MODEL_CARD.read_text(), re.MULTILINE)
    assert found, f"{MODEL_CARD}: no '| accuracy | **N%**' row in the held-out results"
    return float(found.group(1)) / 100


def allowed_mistakes(parts: int, per_part_error: float, certainty: float = 0.999) -> int:
    """The most wrong outcomes among ``parts`` that a model with this error rate gives with
    ``certainty`` (the binomial quantile): more means the model on the line is worse than its card."""
    total = 0.0
    for k in range(parts + 1):
        total += math.comb(parts, k) * per_part_error**k * (1 - per_part_error) ** (parts - k)
        if total >= certainty:
            return k
    return parts


def line_graph(tmp_path: Path, hmi_port: int) -> tuple[Path, dict[str, Any]]:
    """The shipped graph for PARTS parts, the HMI on a free port, the archive in ``tmp_path``,
    without its plc_sim agent."""
    spec = yaml.safe_load(GRAPH.read_text())
    agents = spec["agents"]
    del agents["plc_sim"]
    spec["nodes"].pop("plc-sim", None)
    agents["trigger"]["params"]["count"] = PARTS
    for camera in ("cam_front", "cam_back"):
        agents[camera]["params"]["trigger_max_age"] = 60.0
    agents["plc"]["params"]["join_timeout"] = 60.0
    agents["hmi"]["params"]["port"] = hmi_port
    agents["archive"]["params"]["directory"] = str(tmp_path / "archive")
    path = tmp_path / "finger_follower.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path, spec


def truth(part_id: int, spec: dict[str, Any]) -> bool:
    """Whether the part is defective: a defect in either view, as the renderer drew it."""
    views = []
    for camera in ("cam_front", "cam_back"):
        params = spec["agents"][camera]["params"]
        _, seen = render_part(part_id, SyntheticConfig(view=params["view"], seed=params["seed"]))
        views.append(seen["defective"])
    return any(views)


def archived(directory: Path) -> list[Any]:
    """The archive's index entries, oldest first (none before the agent made the index)."""
    if not (directory / Index.FILE).exists():
        return []
    index = Index(directory, readonly=True)
    try:
        return index.query()
    finally:
        index.close()


def hmi_counters(port: int) -> dict[str, Any]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/state", timeout=5) as answer:
            return json.loads(answer.read())["counters"]
    except OSError:
        return {}


@pytest.mark.timeout(240)
def test_every_part_reaches_the_plc_once_in_order_judged_as_the_model_card_says_and_counted_alike_by_the_hmi(
    tmp_path: Path,
) -> None:
    hmi_port = free_port()
    graph, spec = line_graph(tmp_path, hmi_port)
    log = tmp_path / "run.txt"
    with PlcSimulator(RegisterMap(), port=free_port()) as plc, log.open("w") as out:
        env = {**os.environ, "PLC_HOST": "127.0.0.1", "PLC_PORT": str(plc.port), "PYTHONUNBUFFERED": "1"}
        launcher = subprocess.Popen([sys.executable, "-m", "graphrun", "run", str(graph)], stdout=out,
                                    stderr=subprocess.STDOUT, env=env, cwd=tmp_path)
        try:
            wait_until(lambda: len(plc.results) >= PARTS or launcher.poll() is not None, timeout=90,
                       what=f"{PARTS} parts at the PLC")
            wait_until(lambda: hmi_counters(hmi_port).get("parts") == PARTS, timeout=30,
                       what=f"the HMI counting {PARTS} parts")
            counters = hmi_counters(hmi_port)
            rejected = sum(1 for r in plc.results if r.values["outcome"] != OK)
            wait_until(lambda: len(archived(tmp_path / "archive")) >= rejected, timeout=30,
                       what=f"the archive holding {rejected} rejected parts")
            launcher.send_signal(signal.SIGINT)
            assert launcher.wait(60) == 0, log.read_text()[-5000:]
        finally:
            if launcher.poll() is None:
                launcher.kill()
                launcher.wait()
        results = list(plc.results)
    text = log.read_text()
    assert "crashed" not in text and "Traceback" not in text, text[-5000:]

    # Exactly once and in order: the counter counts 1..N, each with the next part.
    assert [r.sequence for r in results] == list(range(1, PARTS + 1))
    assert [r.values["part_id"] for r in results] == list(range(1, PARTS + 1))

    outcomes = {int(r.values["part_id"]): int(r.values["outcome"]) for r in results}
    assert set(outcomes.values()) <= {OK, DEFECTIVE}, f"incomplete parts: {outcomes}"
    expected = {part: truth(part, spec) for part in outcomes}
    wrong = [part for part, defective in expected.items() if (outcomes[part] == DEFECTIVE) != defective]
    per_part_error = 1 - card_accuracy() ** 2  # a part is judged from two views
    assert len(wrong) <= allowed_mistakes(PARTS, per_part_error), (
        f"parts judged against the ground truth: {wrong} of {PARTS}")
    assert any(expected.values()) and not all(expected.values())  # the run had rejects and passes to tell apart

    rejects = sum(1 for outcome in outcomes.values() if outcome == DEFECTIVE)
    assert (counters["parts"], counters["rejects"]) == (PARTS, rejects)
    stored = archived(tmp_path / "archive")
    assert sorted(e.part_id for e in stored) == sorted(p for p, o in outcomes.items() if o == DEFECTIVE)
    assert all(e.plc_sequence == e.part_id for e in stored)  # sequence n carried part n, as checked above
    summary = [line for line in text.splitlines() if line.startswith("graphrun: run of ")]
    assert len(summary) == 1 and f"plc: {PARTS} parts, {rejects} rejects, 0 incomplete;" in summary[0], summary
