"""Writing an agent: typed ports and params, the test harness, and registration by entry point."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from graphrun import Agent, MessageFormatError, PortError, registry
from graphrun.graph import parse_graph
from graphrun.testing import AgentHarness
from graphrun_agents.examples import Counter, Doubler, Printer


def test_the_harness_runs_an_agent_without_redis() -> None:
    with AgentHarness(Doubler, params={"factor": 3}) as h:
        h.send("numbers", {"value": 2, "seq": 0})
        h.send("numbers", {"value": 5, "seq": 1})
        assert h.take("doubled") == [{"value": 6, "seq": 0}, {"value": 15, "seq": 1}]
        assert h.take("doubled") == []


def test_outputs_carry_the_trace_of_the_message_they_were_made_from() -> None:
    with AgentHarness(Doubler, name="doubler") as h:
        received = h.send("numbers", {"value": 1, "seq": 0}, created=100.0)
        [out] = h.outputs["doubled"]
    assert out.created == 100.0 and [hop.agent for hop in out.hops] == ["doubler"]
    assert out.id != received.id


def test_a_source_produces_when_asked() -> None:
    with AgentHarness(Counter, params={"rate": 1000, "start": 10}) as h:
        h.produce(3)
        assert [p["value"] for p in h.take("numbers")] == [10, 11, 12]


def test_a_source_sends_at_its_declared_rate() -> None:
    with AgentHarness(Counter, params={"rate": 50}) as h:
        started = time.monotonic()
        h.produce(11)
        elapsed = time.monotonic() - started
        assert [p["seq"] for p in h.take("numbers")] == list(range(11))
    assert elapsed >= 0.19  # the eleventh number is due 10 / 50 s after the first

def test_the_harness_refuses_unknown_ports_and_payloads_that_cannot_travel() -> None:
    with AgentHarness(Printer) as h:
        with pytest.raises(PortError, match="no input 'numbers'"):
            h.send("numbers", {"value": 1})
        with pytest.raises(MessageFormatError):
            h.send("values", {"thing": object()})


def test_the_printer_shows_arrays_by_shape(capsys: pytest.CaptureFixture[str]) -> None:
    with AgentHarness(Printer) as h:
        h.send("values", {"image": np.zeros((1024, 1280), np.uint8)})
    assert "{'image': '<uint8 1024x1280>'}" in capsys.readouterr().out


def test_params_are_validated_with_the_agents_own_model() -> None:
    with pytest.raises(ValueError, match="rate"):
        AgentHarness(Counter, params={"rate": 0})


def test_ports_are_found_on_the_class_and_its_bases() -> None:
    class Tripler(Doubler):
        pass

    assert set(Tripler.ports()) == {"numbers", "doubled"}
    assert not Tripler.is_source() and Counter.is_source()


def test_an_installed_package_registers_agent_types_by_entry_point(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A real distribution on sys.path, found through importlib.metadata as pip would install it."""
    (tmp_path / "mycompany_sorter.py").write_text(textwrap.dedent("""\
        from graphrun import Agent, Input

        class Sorter(Agent):
            verdicts = Input()

            def handle(self, msg):
                pass
        """))
    dist = tmp_path / "mycompany_sorter-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: mycompany-sorter\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[graphrun.agents]\nmycompany.sorter = mycompany_sorter:Sorter\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    registry.registered.cache_clear()
    try:
        cls = registry.resolve("mycompany.sorter")
        assert issubclass(cls, Agent) and cls.__name__ == "Sorter"
        graph = parse_graph("name: g\nagents:\n  s: {type: mycompany.sorter, inputs: {verdicts: 'main:v'}}\n")
        assert graph.agents["s"].agent_class is cls
    finally:
        registry.registered.cache_clear()
    done = subprocess.run([sys.executable, "-m", "graphrun", "validate", "/dev/stdin"], capture_output=True, text=True,
                          input="name: g\nagents:\n  s: {type: mycompany.sorter, inputs: {verdicts: 'main:v'}}\n",
                          env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr


def test_running_runs_a_graphs_agents_together_against_a_real_redis(redis_server, graph_file) -> None:
    import redis as redis_py

    from conftest import read_messages, wait_until
    from graphrun.testing import running

    graph = graph_file("""\
name: pair
agents:
  counter: {type: examples.counter, params: {rate: 500, count: 20}, outputs: {numbers: main:numbers}}
  doubler: {type: examples.doubler, inputs: {numbers: counter.numbers}, outputs: {doubled: main:doubled}}
""")
    client = redis_py.Redis.from_url(redis_server.url)
    with running(graph, redis_urls={"main": redis_server.url}) as runners:
        wait_until(lambda: client.exists("doubled") and client.xlen("doubled") == 20, what="20 doubled numbers")
    assert [m["value"] for m in read_messages(client, "doubled")] == [2 * i for i in range(20)]
    assert runners["doubler"].counters.handled == 20


BESIDE_GRAPH = '''\
from graphrun import Agent, Input, Message, Output
from graphrun_agents.examples import Number


class Tripler(Agent):
    numbers = Input(Number)
    tripled = Output(Number)

    def handle(self, msg: Message[Number]) -> None:
        self.tripled.send({"value": 3 * msg["value"], "seq": msg["seq"]})
'''


def test_an_agent_beside_its_graph_resolves_and_runs_yet_its_folder_leaves_sys_path(
        tmp_path: Path, redis_server) -> None:
    import redis as redis_py

    from conftest import read_messages, wait_until
    from graphrun import load_graph
    from graphrun.testing import running

    (tmp_path / "tripler_beside_graph.py").write_text(BESIDE_GRAPH)
    (tmp_path / "triple.yaml").write_text("""\
name: triple
agents:
  counter: {type: examples.counter, params: {rate: 500, count: 5}, outputs: {numbers: main:numbers}}
  tripler: {type: "tripler_beside_graph:Tripler", inputs: {numbers: counter.numbers}, outputs: {tripled: main:tripled}}
""")
    before = list(sys.path)
    try:
        graph = load_graph(tmp_path / "triple.yaml")
        # The folder was importable while the graph was read, and only then; what was imported stays.
        assert sys.path == before
        assert graph.agents["tripler"].agent_class is sys.modules["tripler_beside_graph"].Tripler
        client = redis_py.Redis.from_url(redis_server.url)
        with running(graph, redis_urls={"main": redis_server.url}):
            wait_until(lambda: client.exists("tripled") and client.xlen("tripled") == 5, what="5 tripled numbers")
        assert [m["value"] for m in read_messages(client, "tripled")] == [0, 3, 6, 9, 12]
    finally:
        sys.modules.pop("tripler_beside_graph", None)


def test_a_graph_whose_agent_module_fails_to_import_leaves_sys_path_as_it_was(tmp_path: Path) -> None:
    from graphrun import GraphError, load_graph

    (tmp_path / "broken_beside_graph.py").write_text("raise ImportError('needs a vendor SDK')\n")
    (tmp_path / "broken.yaml").write_text("name: broken\nagents:\n  a: {type: 'broken_beside_graph:Agent'}\n")
    before = list(sys.path)
    with pytest.raises(GraphError, match="needs a vendor SDK"):
        load_graph(tmp_path / "broken.yaml")
    assert sys.path == before
    assert str(tmp_path) not in sys.path


def test_the_harness_undoes_what_a_raising_handle_did() -> None:
    """As under the runner: outputs sent and messages held before an exception are dropped."""
    from runner_agents import FailingRelease

    with AgentHarness(FailingRelease) as h:
        with pytest.raises(RuntimeError, match="item 1 fails"):
            h.deliver([h.message("items", {"seq": s}) for s in (0, 1, 2)])
        assert h.take("copies") == [] and h.held == [] and h.released == []
        h.send("items", {"seq": 0})
        assert h.take("copies") == [{"seq": 0}]
