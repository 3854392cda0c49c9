"""`graphrun validate` survives any file it is given: broken agent modules, bytes that are
not text, YAML built to exhaust memory or the stack, and wirings that would run forever.

Each case ends in ``FILE:LINE:COL: message`` problems, never in a traceback or a hang.
"""

from __future__ import annotations

import textwrap
import time
from pathlib import Path

import pytest
from conftest import run_validate as validate
from graphrun import GraphError, cli, registry
from graphrun.errors import Problem
from graphrun.graph import load_graph, parse_graph
from test_graph_validation import GOOD  # the one valid graph the validation tests start from

TESTS = Path(__file__).parent



def problems_in(text: str, environ: dict[str, str] | None = None) -> list[Problem]:
    with pytest.raises(GraphError) as caught:
        parse_graph(textwrap.dedent(text), "g.yaml", environ=environ or {})
    return caught.value.problems


def only(text: str, environ: dict[str, str] | None = None) -> Problem:
    found = problems_in(text, environ)
    assert len(found) == 1, [str(p) for p in found]
    return found[0]


def problems_in_file(path: Path) -> list[Problem]:
    with pytest.raises(GraphError) as caught:
        load_graph(path)
    return caught.value.problems


def graph_using(tmp_path: Path, agent_type: str) -> Path:
    """A graph file in ``tmp_path`` whose agent ``broken`` has its type on line 12 has type ``agent_type``."""
    path = tmp_path / "g.yaml"
    path.write_text(GOOD + f"  broken:\n    type: {agent_type}\n")
    return path


# --- 1. agent modules that fail to import ---------------------------------------------------


def test_an_agent_module_raising_at_import_is_reported_at_its_type_line(tmp_path: Path) -> None:
    (tmp_path / "licensed_camera.py").write_text("raise RuntimeError('no licence for the camera SDK')\n")
    [problem] = problems_in_file(graph_using(tmp_path, "licensed_camera:Camera"))
    assert (problem.line, problem.column, problem.path) == (12, 11, "agents.broken.type")
    assert "cannot import licensed_camera" in problem.message
    assert "RuntimeError: no licence for the camera SDK" in problem.message
    assert "licensed_camera.py:1" in problem.message  # where in the module it failed


def test_an_agent_module_with_a_syntax_error_is_reported_with_the_module_s_line(tmp_path: Path) -> None:
    (tmp_path / "half_written.py").write_text("from graphrun import Agent\n\nclass Sorter(Agent:\n    pass\n")
    [problem] = problems_in_file(graph_using(tmp_path, "half_written:Sorter"))
    assert (problem.line, problem.path) == (12, "agents.broken.type")
    assert "SyntaxError" in problem.message and "half_written.py:3" in problem.message


def test_an_agent_module_exiting_at_import_does_not_end_validation(tmp_path: Path) -> None:
    (tmp_path / "exits_early.py").write_text("import sys\nsys.exit('no display')\n")
    [problem] = problems_in_file(graph_using(tmp_path, "exits_early:Agent"))
    assert problem.line == 12 and "SystemExit: no display" in problem.message


def test_a_registered_agent_type_whose_module_raises_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "plant_sorter.py").write_text("import json\nCONFIG = json.loads('{not json')\n")
    monkeypatch.setattr(registry, "registered", lambda: {"plant.sorter": "plant_sorter:Sorter"})
    [problem] = problems_in_file(graph_using(tmp_path, "plant.sorter"))
    assert (problem.line, problem.path) == (12, "agents.broken.type")
    assert "agent type 'plant.sorter'" in problem.message and "JSONDecodeError" in problem.message


@pytest.mark.parametrize("agent_type", [":Sorter", ".relative:Sorter", "sample_agents:"])
def test_malformed_module_class_names_are_reported(tmp_path: Path, agent_type: str) -> None:
    [problem] = problems_in_file(graph_using(tmp_path, f"'{agent_type}'"))
    assert (problem.line, problem.path) == (12, "agents.broken.type")


def test_the_validate_command_reports_a_broken_agent_module_without_a_traceback(tmp_path: Path) -> None:
    (tmp_path / "zero_agent.py").write_text("RATE = 1 / 0\n")
    path = graph_using(tmp_path, "zero_agent:Agent")
    done = validate(path)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.startswith(f"{path}:12:11: agent type 'zero_agent:Agent': cannot import zero_agent: "
                                  "ZeroDivisionError: division by zero")


def test_an_agent_class_whose_params_check_raises_is_reported_at_its_params(tmp_path: Path) -> None:
    (tmp_path / "fussy_agent.py").write_text(textwrap.dedent("""\
        from pydantic import BaseModel, field_validator
        from graphrun import Agent, Output

        class Fussy(Agent):
            items = Output(dict)

            class Params(BaseModel):
                rate: int = 1

                @field_validator("rate")
                @classmethod
                def _lookup(cls, value: int) -> int:
                    return {}[value]  # a KeyError, which pydantic does not turn into a validation error
        """))
    path = tmp_path / "g.yaml"
    path.write_text(GOOD + "  fussy:\n    type: fussy_agent:Fussy\n    params: {rate: 3}\n")
    [problem] = problems_in_file(path)
    assert (problem.line, problem.path) == (13, "agents.fussy.params")
    assert "KeyError: 3" in problem.message and "fussy_agent.py:13" in problem.message


# --- 2. bytes that are not UTF-8, nesting that would exhaust the stack ------------------------


def test_bytes_that_are_not_utf8_are_reported_where_they_are(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(GOOD.encode() + "  caf\xe9:\n    type: sample_agents:Source\n".encode("latin-1"))
    [problem] = problems_in_file(path)
    assert (problem.line, problem.column) == (11, 6)
    assert "not UTF-8" in problem.message and "0xe9" in problem.message


NESTED = {
    "flow sequences": "name: t\nagents: " + "[" * 10_000,
    "flow mappings": "name: t\nagents: " + "{a: " * 10_000,
    "block sequences": "name: t\nagents:\n  " + "- " * 10_000 + "x\n",
}


@pytest.mark.parametrize("text", NESTED.values(), ids=NESTED.keys())
def test_yaml_nested_thousands_deep_is_refused(tmp_path: Path, text: str) -> None:
    path = tmp_path / "deep.yaml"
    path.write_text(text)
    [problem] = problems_in_file(path)
    assert problem.line in (2, 3) and "nested more than 64 levels" in problem.message


def test_the_validate_command_refuses_deep_nesting_without_a_traceback(tmp_path: Path) -> None:
    path = tmp_path / "deep.yaml"
    path.write_text(NESTED["flow sequences"])
    done = validate(path)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.startswith(f"{path}:2:") and "nested more than" in done.stderr


def test_an_alias_inside_its_own_anchor_is_refused() -> None:
    problem = only("name: t\nagents:\n  a:\n    type: sample_agents:Source\n    params: &p {count: *p}\n")
    assert problem.line == 5 and "recursive" in problem.message


def test_values_yaml_cannot_construct_are_reported_not_raised() -> None:
    found = problems_in("""\
        name: t
        agents:
          a:
            type: sample_agents:Source
            params: {count: !plc 3, when: 2026-13-45, size: !!int ''}
        """)
    assert [p.line for p in found] == [5, 5, 5]
    assert "!plc" in found[0].message and "2026-13-45" in found[1].message and "''" in found[2].message


def test_a_key_yaml_cannot_construct_hides_no_other_problem() -> None:
    found = problems_in("name: t\n!plc key: 1\nagents: {}\nbogus: 2\n")
    assert [(p.line, p.column) for p in found] == [(2, 1), (4, 1)]
    assert "!plc" in found[0].message and found[1].message == "unknown key 'bogus'"


def test_keys_must_be_plain_values() -> None:
    problem = only("name: t\n? [a, b]\n: 1\nagents: {}\n")
    assert problem.line == 2 and "a key must be a plain value" in problem.message


# --- 3. alias bombs ----------------------------------------------------------------------------

BILLION_LAUGHS = """\
name: t
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
agents: {}
"""


def test_an_alias_bomb_is_refused_at_once_at_the_alias_line(tmp_path: Path) -> None:
    path = tmp_path / "laughs.yaml"
    path.write_text(BILLION_LAUGHS)
    assert len(BILLION_LAUGHS) < 500
    started = time.monotonic()
    found = problems_in_file(path)
    assert time.monotonic() - started < 1.0
    [problem] = found
    assert problem.line == 6 and problem.column == 8  # the alias whose copy passes the limit
    assert "aliases expand to more than 10000 values" in problem.message


def test_the_validate_command_refuses_an_alias_bomb(tmp_path: Path) -> None:
    path = tmp_path / "laughs.yaml"
    path.write_text(BILLION_LAUGHS)
    done = validate(path)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.startswith(f"{path}:6:8: ")


def test_ordinary_aliases_still_share_settings() -> None:
    text = GOOD.replace("    inputs: {items: source.items}",
                        "    inputs: {items: {from: source.items, max_deliveries: &tries 9}}\n"
                        "    params: {poison: [*tries, *tries]}")
    relay = parse_graph(text, "g.yaml").agents["relay"]
    assert relay.inputs["items"].spec.max_deliveries == 9 and relay.params["poison"] == [9, 9]


# --- 4. wirings that are accepted today and should not be --------------------------------------


def test_an_agent_may_not_read_its_own_output() -> None:
    problem = only(GOOD.replace("inputs: {items: source.items}", "inputs: {items: relay.copies}"))
    assert (problem.line, problem.path) == (10, "agents.relay.inputs.items")
    assert "agent 'relay' reads its own output relay.copies" in problem.message


def test_an_agent_may_not_read_its_own_output_by_stream_name() -> None:
    problem = only(GOOD.replace("inputs: {items: source.items}", "inputs: {items: 'main:t.relay.copies'}"))
    assert problem.line == 10 and "reads its own output relay.copies" in problem.message


CYCLE = """\
name: t
agents:
  washer:
    type: sample_agents:Relay
    inputs: {items: dryer.copies}
  dryer:
    type: sample_agents:Relay
    inputs: {items: FROM_WASHER}
"""


def test_a_cycle_of_agents_is_refused() -> None:
    problem = only(CYCLE.replace("FROM_WASHER", "washer.copies"))
    assert (problem.line, problem.path) == (8, "agents.dryer.inputs.items")
    assert "washer -> dryer -> washer" in problem.message and "cycle: true" in problem.message


def test_a_cycle_the_graph_marks_as_intended_is_accepted() -> None:
    graph = parse_graph(CYCLE.replace("FROM_WASHER", "{from: washer.copies, cycle: true}"), "g.yaml")
    assert graph.agents["dryer"].inputs["items"].spec.cycle is True
    assert graph.agents["washer"].inputs["items"].spec.cycle is False


def test_a_longer_cycle_is_refused_once() -> None:
    text = CYCLE.replace("FROM_WASHER", "folder.copies") + (
        "  folder:\n    type: sample_agents:Relay\n    inputs: {items: washer.copies}\n")
    problem = only(text)
    assert "form a cycle" in problem.message and problem.line == 11


@pytest.mark.parametrize("url", ["http://plc-cell-4:6379", "redis-server:6379", "tcp://10.0.0.5"])
def test_a_redis_url_must_be_redis_rediss_or_unix(url: str) -> None:
    problem = only(GOOD.replace("  main: {}", f"  main: {{url: '{url}'}}"))
    assert (problem.line, problem.column, problem.path) == (3, 15, "redis.main.url")
    assert "redis://, rediss:// or unix://" in problem.message


@pytest.mark.parametrize("url", ["redis://:pw@10.0.0.5:6379/0", "rediss://plant:6380", "unix:///run/redis.sock"])
def test_redis_rediss_and_unix_urls_are_accepted(url: str) -> None:
    assert parse_graph(GOOD.replace("  main: {}", f"  main: {{url: '{url}'}}"), "g.yaml").redis["main"].url == url


# --- 5. every problem, in one run ----------------------------------------------------------------


def test_a_missing_environment_variable_hides_no_other_problem() -> None:
    text = GOOD.replace("  main: {}", "  main: {url: 'redis://${PLC_HOST}:6379'}").replace(
        "sample_agents:Relay", "nope.nope") + "bogus: 1\n"
    found = problems_in(text)
    assert [(p.line, p.path) for p in found] == [(3, "redis.main.url"), (9, "agents.relay.type"), (11, "bogus")]
    assert "PLC_HOST is not set" in found[0].message


def test_a_value_left_unresolved_is_reported_once() -> None:
    found = problems_in(GOOD.replace("  main: {}", "  main: {url: '${PLANT_REDIS}'}")
                        .replace("sample_agents:Relay", "${RELAY_TYPE}"))
    assert [(p.line, p.path) for p in found] == [(3, "redis.main.url"), (9, "agents.relay.type")]
    assert all("is not set" in p.message for p in found)


def test_a_graph_without_a_name_or_with_bad_agents_still_has_its_other_parts_checked() -> None:
    found = problems_in(GOOD.replace("name: t\n", "").replace("sample_agents:Relay", "nope.nope"))
    assert [(p.line, p.path) for p in found] == [(1, ""), (8, "agents.relay.type")]
    assert found[0].message == "missing required key 'name'"
    found = problems_in("name: t\nredis: {main: {url: 'http://x'}}\nagents: [a, b]\n")
    assert [p.line for p in found] == [2, 3]


def test_a_duplicate_key_hides_no_other_problem() -> None:
    found = problems_in(GOOD.replace("    type: sample_agents:Relay\n",
                                     "    type: sample_agents:Relay\n    type: sample_agents:Relay\n") + "bogus: 1\n")
    assert [(p.line, p.message) for p in found] == [(10, "duplicate key 'type'"), (12, "unknown key 'bogus'")]


INDENTATION = {
    "less than its siblings": ("name: t\nagents:\n  relay:\n    type: sample_agents:Relay\n   node: edge-1\n", 5, 4),
    "under a value": ("name: t\nagents:\n  relay:\n    type: sample_agents:Relay\n      node: edge-1\n", 5, 7),
    "a key out of its block": ("name: t\nagents:\n  relay: {type: x}\n bogus: 1\n", 4, 2),
    "a list item": ("name: t\nagents:\n  a:\n    params:\n      l:\n        - 1\n       - 2\n", 7, 8),
    "with a tab": ("name: t\nagents:\n\trelay: {type: x}\n", 3, 1),
    "a list among keys": ("name: t\nagents:\n  relay:\n    type: x\n  - b\n", 5, 3),
}


@pytest.mark.parametrize("text,line,column", INDENTATION.values(), ids=INDENTATION.keys())
def test_an_indentation_error_names_the_line_that_is_wrong(text: str, line: int, column: int) -> None:
    problem = only(text)
    assert (problem.line, problem.column) == (line, column)
    assert "indentation" in problem.message


def test_a_key_without_a_space_after_its_colon_is_reported_on_its_own_line() -> None:
    problem = only("name: t\nagents:\n  relay:\n    type:sample_agents:Relay\n    node: edge-1\n")
    assert (problem.line, problem.column) == (4, 5) and "a space must follow the ':'" in problem.message


def test_a_duplicate_anchor_names_both_lines() -> None:
    problem = only("name: t\na: &x 1\nb: &x 2\nagents: {}\n")
    assert problem.line == 3 and "duplicate anchor 'x' (first at line 2)" in problem.message


def test_the_validate_command_answers_even_when_graphrun_itself_fails(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    def broken(path: Path) -> None:
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr(cli, "load_graph", broken)
    path = tmp_path / "g.yaml"
    path.write_text(GOOD)
    assert cli.main(["validate", str(path)]) == 1
    assert capsys.readouterr().err.startswith(f"{path}:1:1: graphrun could not finish validating this file: "
                                              "RecursionError: maximum recursion depth exceeded")
