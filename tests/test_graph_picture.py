"""`graphrun graph`: a picture of a graph from its file, checked by reading the picture back.

Mermaid is read back with a small parser of the lines the command writes; DOT, SVG and PNG
by the programs that consume them (Graphviz's dot, an XML parser, OpenCV).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import cv2
import numpy as np
import pytest
from graphrun.cli import main
from graphrun.graph import load_graph

ROOT = Path(__file__).resolve().parent.parent
GRAPHS = ROOT / "graphs"
needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is not installed")

FAN_OUT = """\
name: fan_out
redis:
  main: {}
  side: {}
agents:
  counter:
    type: examples.counter
    outputs: {numbers: main:fan.numbers}
  doubler:
    type: examples.doubler
    replicas: 3
    inputs: {numbers: counter.numbers}
    outputs: {doubled: side:fan.doubled}
  printer:
    type: examples.printer
    inputs:
      values: {from: counter.numbers, dead_letter: fan.rejects}
  doubled_printer:
    type: examples.printer
    inputs: {values: doubler.doubled}
"""


def draw(graph: Path, *options: str, capsys: pytest.CaptureFixture[str]) -> str:
    assert main(["graph", str(graph), *options]) == 0
    return capsys.readouterr().out


def fan_out_graph(tmp_path: Path) -> Path:
    path = tmp_path / "fan_out.yaml"
    path.write_text(FAN_OUT)
    return path


# --- reading a Mermaid picture back -------------------------------------------------------

_SHAPE = re.compile(r'^\s*(\w+)(\[\(|\[)"(.*)"(\)\]|\])$')
_EDGE = re.compile(r'^\s*(\w+) (-->|-\.->)\|"(.*)"\| (\w+)$')


def mermaid_shapes(text: str) -> dict[str, tuple[str, list[str]]]:
    """Shape id -> (kind: 'box' or 'cylinder', label lines without markup)."""
    shapes: dict[str, tuple[str, list[str]]] = {}
    for line in text.splitlines():
        if match := _SHAPE.match(line):
            assert match[1] not in shapes, f"shape {match[1]} declared twice"
            lines = [re.sub(r"</?b>", "", part) for part in match[3].split("<br/>")]
            shapes[match[1]] = ("cylinder" if match[2] == "[(" else "box", lines)
    return shapes


def mermaid_edges(text: str) -> list[tuple[str, str, str, bool]]:
    """(source id, target id, label, dashed)."""
    return [(m[1], m[4], m[3], m[2] == "-.->") for line in text.splitlines() if (m := _EDGE.match(line))]


def shape_id(shapes: dict[str, tuple[str, list[str]]], first_line: str, kind: str) -> str:
    found = [i for i, (k, lines) in shapes.items() if k == kind and lines[0] == first_line]
    assert len(found) == 1, f"{first_line!r} drawn {len(found)} times as a {kind}"
    return found[0]


# --- Mermaid --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["finger_follower.yaml", "hello.yaml"])
def test_mermaid_names_every_agent_with_its_type_and_every_stream_with_its_instance(
        name: str, capsys: pytest.CaptureFixture[str]) -> None:
    graph = load_graph(GRAPHS / name)
    text = draw(GRAPHS / name, capsys=capsys)
    assert text.startswith("flowchart LR\n")
    shapes = mermaid_shapes(text)
    for agent in graph.agents.values():
        lines = shapes[shape_id(shapes, agent.name, "box")][1]
        assert lines[1].startswith(agent.type)
    streams = {b.stream for a in graph.agents.values() for b in [*a.inputs.values(), *a.outputs.values()]}
    assert streams
    for ref in streams:
        assert shapes[shape_id(shapes, ref.key, "cylinder")][1] == [ref.key, f"on {ref.instance}"]


def test_mermaid_groups_agents_by_node(capsys: pytest.CaptureFixture[str]) -> None:
    text = draw(GRAPHS / "finger_follower.yaml", capsys=capsys)
    shapes = mermaid_shapes(text)
    members: dict[str, set[str]] = {}
    current = None
    for line in text.splitlines():
        if match := re.match(r'\s*subgraph \w+\["node ([\w-]+)', line):
            current = members.setdefault(match[1], set())
        elif line.strip() == "end":
            current = None
        elif current is not None and (m := _SHAPE.match(line)):
            current.add(shapes[m[1]][1][0])
    assert members == {"camera-front": {"cam_front"}, "camera-back": {"cam_back"},
                       "inference": {"trigger", "cls_front", "cls_back", "plc"}, "hmi": {"hmi", "archive"},
                       "plc-sim": {"plc_sim"}}


def test_a_stream_read_by_two_agents_is_one_stream_with_two_readers(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = draw(fan_out_graph(tmp_path), capsys=capsys)
    shapes, edges = mermaid_shapes(text), mermaid_edges(text)
    numbers = shape_id(shapes, "fan.numbers", "cylinder")
    ids = {name: shape_id(shapes, name, "box") for name in ("counter", "doubler", "printer", "doubled_printer")}
    assert [(s, label) for s, t, label, _ in edges if t == numbers] == [(ids["counter"], "numbers")]
    readers = {(t, label) for s, t, label, dashed in edges if s == numbers and not dashed}
    assert readers == {(ids["doubler"], "numbers"), (ids["printer"], "values")}
    assert shapes[ids["doubler"]][1] == ["doubler", "examples.doubler ×3"]
    assert shapes[shape_id(shapes, "fan.doubled", "cylinder")][1] == ["fan.doubled", "on side"]


def test_every_input_has_a_dashed_edge_to_its_dead_letter_stream(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = draw(fan_out_graph(tmp_path), capsys=capsys)
    shapes, edges = mermaid_shapes(text), mermaid_edges(text)
    ids = {lines[0]: i for i, (_, lines) in shapes.items()}
    dead = {(shapes[s][1][0], tuple(shapes[t][1])) for s, t, _, dashed in edges if dashed}
    assert dead == {
        ("doubler", ("fan.numbers:dead", "on main")),
        ("printer", ("fan.rejects", "on main")),            # its own dead_letter key
        ("doubled_printer", ("fan.doubled:dead", "on side")),
    }
    assert f"class {ids['fan.numbers:dead']},{ids['fan.rejects']},{ids['fan.doubled:dead']} dead" in text


def test_the_dead_letter_stream_two_readers_share_is_drawn_once(capsys: pytest.CaptureFixture[str]) -> None:
    graph = load_graph(GRAPHS / "finger_follower.yaml")
    text = draw(GRAPHS / "finger_follower.yaml", capsys=capsys)
    shapes, edges = mermaid_shapes(text), mermaid_edges(text)
    for agent in graph.agents.values():
        for port, binding in agent.inputs.items():
            dead = shape_id(shapes, binding.dead_letter.key, "cylinder")
            assert shapes[dead][1][1] == f"on {binding.dead_letter.instance}"
            assert (shape_id(shapes, agent.name, "box"), dead, f"{port}: dead letters", True) in edges
    parts_dead = shape_id(shapes, "line.parts:dead", "cylinder")
    assert sorted(shapes[s][1][0] for s, t, _, _ in edges if t == parts_dead) == ["cam_back", "cam_front"]


def test_readme_shows_the_picture_the_command_draws(capsys: pytest.CaptureFixture[str]) -> None:
    text = draw(GRAPHS / "finger_follower.yaml", capsys=capsys)
    readme = (ROOT / "README.md").read_text()
    assert f"```mermaid\n{text}```" in readme, "regenerate it: graphrun graph graphs/finger_follower.yaml"


# --- DOT, SVG, PNG ------------------------------------------------------------------------------


def dot_json(dot_file: Path) -> dict:
    done = subprocess.run(["dot", "-Tjson", str(dot_file)], capture_output=True, check=False)
    assert done.returncode == 0, done.stderr.decode()
    return json.loads(done.stdout)


@needs_dot
@pytest.mark.parametrize("name", ["finger_follower.yaml", "hello.yaml"])
def test_dot_output_is_read_by_graphviz(name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = draw(GRAPHS / name, "--format", "dot", capsys=capsys)
    (tmp_path / "g.dot").write_text(text)
    done = subprocess.run(["dot", "-Tsvg", str(tmp_path / "g.dot")], capture_output=True, check=False)
    assert done.returncode == 0 and not done.stderr, done.stderr.decode()
    graph = load_graph(GRAPHS / name)
    laid_out = dot_json(tmp_path / "g.dot")
    clusters = {o["label"] for o in laid_out["objects"] if o["name"].startswith("cluster_")}
    assert clusters == {f"node {a.node}" + (f" ({graph.nodes[a.node].platform})" if graph.nodes[a.node].platform else "")
                        for a in graph.agents.values()}
    labels = [o.get("label", "").split("\\n")[0] for o in laid_out["objects"]]
    for agent in graph.agents:
        assert labels.count(agent) == 1


@needs_dot
def test_dot_has_the_same_fan_out(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dot_file = tmp_path / "fan.dot"
    draw(fan_out_graph(tmp_path), "-o", str(dot_file), capsys=capsys)  # the format from the suffix
    laid_out = dot_json(dot_file)
    names = {o["_gvid"]: o["label"].split("\\n")[0] for o in laid_out["objects"] if "nodes" not in o}
    edges = [(names[e["tail"]], names[e["head"]], e.get("style")) for e in laid_out["edges"]]
    assert sorted(h for t, h, style in edges if t == "fan.numbers") == ["doubler", "printer"]
    assert [t for t, h, _ in edges if h == "fan.numbers"] == ["counter"]
    assert sorted((t, h) for t, h, style in edges if style == "dashed") == [
        ("doubled_printer", "fan.doubled:dead"), ("doubler", "fan.numbers:dead"), ("printer", "fan.rejects")]


@needs_dot
def test_stream_keys_with_quotes_and_markup_are_drawn_as_written(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key = 'odd "key" <b>#1|2\\n'
    path = tmp_path / "odd.yaml"
    path.write_text(FAN_OUT.replace("main:fan.numbers", json.dumps(f"main:{key}")))  # YAML reads JSON strings
    dot_file = tmp_path / "odd.dot"
    draw(path, "-o", str(dot_file), capsys=capsys)
    labels = [o.get("label", "") for o in dot_json(dot_file)["objects"]]
    assert key.replace("\\", "\\\\") + "\\non main" in labels  # dot -Tjson keeps DOT's escapes
    shapes = mermaid_shapes(draw(path, capsys=capsys))
    escaped = [lines[0] for _, (kind, lines) in shapes.items() if kind == "cylinder" and "odd" in lines[0]]
    assert escaped == ["odd #quot;key#quot; #lt;b#gt;#35;1#124;2#92;n", "odd #quot;key#quot; #lt;b#gt;#35;1#124;2#92;n:dead"]


@needs_dot
def test_svg_is_an_svg_document_naming_every_agent(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "line.svg"
    draw(GRAPHS / "finger_follower.yaml", "--format", "svg", "-o", str(out), capsys=capsys)
    root = ET.fromstring(out.read_bytes())
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    texts = {t.text for t in root.iter("{http://www.w3.org/2000/svg}text")}
    assert set(load_graph(GRAPHS / "finger_follower.yaml").agents) <= texts
    assert {"line.parts", "line.parts:dead", "on cam-front"} <= texts


@needs_dot
def test_png_is_a_png_image(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "line.png"
    draw(GRAPHS / "finger_follower.yaml", "-o", str(out), capsys=capsys)
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None and image.shape[0] > 100 and image.shape[1] > 100
    assert len(np.unique(image.reshape(-1, 3), axis=0)) > 2  # drawn on, not a blank page


def test_without_graphviz_svg_fails_clearly_and_text_formats_still_work(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # a PATH with no dot on it
    out = tmp_path / "line.svg"
    assert main(["graph", str(GRAPHS / "hello.yaml"), "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert "Graphviz" in err and "'dot'" in err and "--format mermaid or dot" in err
    assert not out.exists()
    assert "digraph" in draw(GRAPHS / "hello.yaml", "--format", "dot", capsys=capsys)


def test_an_unknown_output_suffix_asks_for_a_format(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["graph", str(GRAPHS / "hello.yaml"), "-o", str(tmp_path / "hello.pdf")]) == 1
    assert "--format" in capsys.readouterr().err
    assert not (tmp_path / "hello.pdf").exists()


def test_a_bad_graph_file_is_reported_not_drawn(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(FAN_OUT.replace("counter.numbers}", "nobody.numbers}"))
    assert main(["graph", str(path)]) == 1
    captured = capsys.readouterr()
    assert "unknown agent 'nobody'" in captured.err and "flowchart" not in captured.out
