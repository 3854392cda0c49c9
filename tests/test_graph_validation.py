"""`graphrun validate` finds every problem in a graph file and says where it is."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from conftest import run_validate as validate
from graphrun import GraphError
from graphrun.graph import load_graph, parse_graph

TESTS = Path(__file__).parent

GOOD = """\
name: t
redis:
  main: {}
agents:
  source:
    type: sample_agents:Source
    outputs: {items: main:t.items}
  relay:
    type: sample_agents:Relay
    inputs: {items: source.items}
"""


def problems(text: str, environ: dict[str, str] | None = None) -> list[tuple[int, str, str]]:
    """(line, message, field path) of each problem found in ``text``."""
    with pytest.raises(GraphError) as caught:
        parse_graph(textwrap.dedent(text), "g.yaml", environ=environ or {})
    return [(p.line, p.message, p.path) for p in caught.value.problems]


def only(text: str, environ: dict[str, str] | None = None) -> tuple[int, str, str]:
    found = problems(text, environ)
    assert len(found) == 1, found
    return found[0]


def test_a_good_graph_binds_every_port_to_a_stream() -> None:
    graph = parse_graph(GOOD, "g.yaml")
    assert str(graph.agents["source"].outputs["items"].stream) == "main:t.items"
    assert graph.agents["relay"].inputs["items"].source == ("source", "items")
    # An output the graph does not mention still gets a stream of its own.
    assert str(graph.agents["relay"].outputs["copies"].stream) == "main:t.relay.copies"


def test_yaml_syntax_errors_name_the_line() -> None:
    line, message, _ = only("name: t\nagents:\n  a: {type: x\n  b: 1\n")
    assert "YAML syntax error" in message and line == 4


def test_unknown_keys_are_reported_where_they_stand() -> None:
    line, message, path = only(GOOD.replace("    type: sample_agents:Relay\n", "    type: sample_agents:Relay\n    colour: red\n"))
    assert (line, path) == (10, "agents.relay.colour") and "unknown key 'colour'" in message


def test_an_unknown_agent_type_is_reported_with_the_known_ones() -> None:
    line, message, path = only(GOOD.replace("sample_agents:Relay", "examples.doublr"))
    assert (line, path) == (9, "agents.relay.type")
    assert "unknown agent type 'examples.doublr'" in message and "examples.doubler" in message


def test_an_unimportable_agent_class_is_reported() -> None:
    line, message, _ = only(GOOD.replace("sample_agents:Relay", "no_such_module:Relay"))
    assert line == 9 and "cannot import no_such_module" in message


def test_unknown_port_names_are_reported() -> None:
    line, message, path = only(GOOD.replace("inputs: {items: source.items}", "inputs: {items: source.items, extra: source.items}"))
    assert (line, path) == (10, "agents.relay.inputs.extra") and "no input port 'extra'" in message


def test_an_unbound_required_input_is_reported() -> None:
    line, message, _ = only(GOOD.replace("    inputs: {items: source.items}\n", ""))
    assert line == 9 and "required input 'items' of agent 'relay' is not connected" in message


def test_connected_ports_must_carry_compatible_messages() -> None:
    text = GOOD + "  labeller:\n    type: sample_agents:Labeller\n    inputs: {labels: source.items}\n"
    line, message, path = only(text)
    assert (line, path) == (13, "agents.labeller.inputs.labels")
    assert "source.items sends Item but labeller.labels takes Label" in message and "text" in message


def test_an_input_from_a_missing_agent_or_port_is_reported() -> None:
    assert only(GOOD.replace("source.items", "sourse.items"))[:2] == (10, "input from unknown agent 'sourse' (agents: relay, source)")
    line, message, _ = only(GOOD.replace("source.items", "source.itemz"))
    assert line == 10 and "agent 'source' has no output port 'itemz' (its outputs: items)" in message


def test_two_agents_may_not_write_one_stream() -> None:
    text = GOOD + "  other:\n    type: sample_agents:Source\n    outputs: {items: main:t.items}\n"
    line, message, _ = only(text)
    assert line == 13 and "already written by source.items" in message


def test_unknown_redis_instances_and_nodes_are_reported() -> None:
    text = GOOD.replace("outputs: {items: main:t.items}", "outputs: {items: plant:t.items}")
    line, message, _ = only(text)
    assert line == 7 and "unknown Redis instance 'plant'" in message
    text = GOOD.replace("    type: sample_agents:Relay\n", "    type: sample_agents:Relay\n    node: edge-9\n")
    line, message, path = only(text)
    assert (line, path) == (10, "agents.relay.node") and "unknown node 'edge-9'" in message


def test_a_redis_instance_s_persistence_is_one_of_the_known_settings() -> None:
    assert parse_graph(GOOD, "g.yaml").redis["main"].persistence == "aof"  # the safe default
    text = GOOD.replace("  main: {}", "  main: {persistence: rdb}\n  frames: {persistence: none}")
    assert {n: r.persistence for n, r in parse_graph(text, "g.yaml").redis.items()} == {"main": "rdb", "frames": "none"}
    with pytest.raises(GraphError) as caught:
        parse_graph(GOOD.replace("  main: {}", "  main: {maxmemory: 1gb, persistence: always}"), "g.yaml")
    [problem] = caught.value.problems
    assert str(problem).startswith("g.yaml:3:39: ")  # at the value
    assert "'aof', 'rdb' or 'none'" in problem.message and "'always'" in problem.message
    assert problem.path == "redis.main.persistence"


def test_params_are_checked_against_the_agents_typed_parameters() -> None:
    text = GOOD.replace("    type: sample_agents:Relay\n", "    type: sample_agents:Relay\n    params:\n      delay_ms: -1\n      speed: 3\n")
    found = problems(text)
    assert (11, "agents.relay.params.delay_ms") in [(line, path) for line, _, path in found]
    assert any(line == 12 and "unknown key 'speed'" in message for line, message, _ in found)
    assert len(found) == 2


def test_missing_params_are_reported() -> None:
    text = GOOD + "  needy:\n    type: sample_agents:NeedsParams\n    params: {}\n"
    line, message, _ = only(text)
    assert line == 13 and "missing required key 'rate'" in message


def test_environment_references_must_resolve() -> None:
    text = GOOD.replace("  main: {}", "  main: {url: \"redis://${REDIS_HOST}:6379\"}")
    line, message, path = only(text)
    assert (line, path) == (3, "redis.main.url") and "REDIS_HOST is not set" in message
    assert parse_graph(text, "g.yaml", environ={"REDIS_HOST": "plc-cell-4"}).redis["main"].url == "redis://plc-cell-4:6379"
    line, message, _ = only(GOOD.replace("  main: {}", "  main: {url: \"${bad name}\"}"))
    assert "bad environment reference" in message
    defaulted = GOOD.replace("  main: {}", "  main: {url: \"${REDIS_URL:-redis://localhost:6379}\"}")
    assert parse_graph(defaulted, "g.yaml", environ={}).redis["main"].url == "redis://localhost:6379"


# Three problems planted in one file: an unknown Redis instance, agent type and top-level key.
THREE_PROBLEMS = GOOD.replace("sample_agents:Relay", "nope.nope").replace("main:t.items", "plant:t.items") + "bogus: 1\n"


def test_every_problem_is_listed_not_just_the_first() -> None:
    found = sorted(problems(THREE_PROBLEMS))
    assert [(line, path) for line, _, path in found] == [
        (7, "agents.source.outputs.items"), (9, "agents.relay.type"), (11, "bogus")]
    redis_instance, agent_type, key = (message for _, message, _ in found)
    assert redis_instance.startswith("unknown Redis instance 'plant' in 'plant:t.items' (known: main)")
    assert agent_type.startswith("unknown agent type 'nope.nope'")
    assert key == "unknown key 'bogus'"


def test_the_validate_command_prints_file_line_column_and_field(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(GOOD.replace("source.items", "source.itemz"))
    done = validate(path)
    assert done.returncode == 1
    assert f"{path}:10:21: agent 'source' has no output port 'itemz'" in done.stderr
    assert "(agents.relay.inputs.items)" in done.stderr


def test_the_validate_command_lists_every_problem_and_fails(tmp_path: Path) -> None:
    path = tmp_path / "three.yaml"
    path.write_text(THREE_PROBLEMS)
    done = validate(path)
    assert done.returncode == 1
    lines = done.stderr.splitlines()
    assert [line.split(": ")[0] for line in lines[:3]] == [f"{path}:7:22", f"{path}:9:11", f"{path}:11:1"]
    assert lines[0].endswith("(agents.source.outputs.items)") and "unknown Redis instance 'plant'" in lines[0]
    assert lines[1].endswith("(agents.relay.type)") and "unknown agent type 'nope.nope'" in lines[1]
    assert lines[2] == f"{path}:11:1: unknown key 'bogus' (bogus)"
    assert lines[3:] == ["3 problem(s) found"]


def test_the_validate_command_accepts_the_shipped_graphs() -> None:
    shipped = sorted((TESTS.parent / "graphs").glob("*.yaml"))
    assert shipped
    for path in shipped:
        done = validate(path)
        assert done.returncode == 0, done.stderr
        graph = load_graph(path)
        assert done.stdout.startswith(f"{path}: ok: graph {graph.name!r}, {len(graph.agents)} agents"), done.stdout


TWO_SETS = GOOD + """\
  both:
    type: sample_agents:TwoSets
    inputs:
      items: {left: source.items, right: "main:t.items"}
      labels: {LABELS}
"""


def test_ports_of_dynamic_sets_are_bound_by_the_names_the_graph_gives() -> None:
    graph = parse_graph(TWO_SETS.replace("{LABELS}", "{}"), "g.yaml")
    both = graph.agents["both"]
    assert both.groups == {"items": ("left", "right")}
    assert both.inputs["left"].source == ("source", "items") and both.inputs["right"].source == ("source", "items")


def test_a_port_name_may_not_be_used_twice_by_one_agent() -> None:
    line, message, path = only(TWO_SETS.replace("{LABELS}", '{left: "main:t.labels"}'))
    assert (line, path) == (15, "agents.both.inputs.labels.left")
    assert "port name 'left' of agent 'both' is already used (agents.both.inputs.items.left)" in message


def test_a_member_of_a_dynamic_set_is_type_checked_against_its_set() -> None:
    line, message, _ = only(TWO_SETS.replace("{LABELS}", "{wrong: source.items}"))
    assert line == 15 and "source.items sends Item but both.wrong takes Label" in message


# --- an agent's own check of its params against the ports wired: Agent.check_wiring --------

ROUTING_AGENTS = '''\
from pydantic import BaseModel

from graphrun import Agent, Inputs, Outputs, ParamError


class RouterParams(BaseModel):
    routes: dict[str, str] = {}


class Router(Agent):
    """Sends each input's messages to the output its route names."""

    sources = Inputs(None)
    targets = Outputs(None)
    Params = RouterParams

    @classmethod
    def check_wiring(cls, params, inputs, outputs):
        problems = [ParamError(("routes",), f"input {i!r} has no route") for i in sorted(inputs - set(params.routes))]
        return problems + [ParamError(("routes", i), f"route to {o!r}, which is no output") for i, o in params.routes.items()
                           if o not in outputs]


class Careless(Router):
    @classmethod
    def check_wiring(cls, params, inputs, outputs):
        return [ParamError(("routes",), params.routes["missing"])]
'''

ROUTED = """\
name: routed
redis: {main: {}}
agents:
  a: {type: sample_agents:Source}
  b: {type: sample_agents:Source}
  router:
    type: routing_agents:Router
    params:
      routes:
        a: left
        b: right
    inputs: {a: a.items, b: b.items}
    outputs: {left: main:left}
"""


def routed(tmp_path: Path, text: str) -> list[tuple[int, str, str]]:
    (tmp_path / "routing_agents.py").write_text(ROUTING_AGENTS)
    path = tmp_path / "routed.yaml"
    path.write_text(text)
    with pytest.raises(GraphError) as caught:
        load_graph(path)
    return [(p.line, p.message, p.path) for p in caught.value.problems]


def test_an_agent_s_own_wiring_check_is_reported_at_the_field_s_line(tmp_path: Path) -> None:
    assert routed(tmp_path, ROUTED) == [(11, "agent 'router': route to 'right', which is no output",
                                         "agents.router.params.routes.b")]
    text = ROUTED.replace("        b: right\n", "").replace("outputs: {left: main:left}", "outputs: {left: main:left, right: main:r}")
    assert routed(tmp_path, text) == [(10, "agent 'router': input 'b' has no route", "agents.router.params.routes")]


def test_a_wiring_check_is_skipped_for_an_agent_with_a_problem_already_reported(tmp_path: Path) -> None:
    found = routed(tmp_path, ROUTED.replace("b: b.items", "b: b.itemz"))
    assert [path for _, _, path in found] == ["agents.router.inputs.b"]


def test_a_wiring_check_that_fails_is_reported_as_such(tmp_path: Path) -> None:
    (line, message, path), = routed(tmp_path, ROUTED.replace("routing_agents:Router", "routing_agents:Careless"))
    assert (line, path) == (9, "agents.router.params")
    assert "the wiring of Careless could not be checked" in message and "KeyError" in message
