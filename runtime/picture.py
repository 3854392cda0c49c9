"""A picture of a process graph, drawn from the graph file alone: Mermaid, DOT, SVG, PNG.

What the picture shows is decided once, in ``describe``: agents as boxes grouped by the
node (machine) they run on, each stream once, as its own shape named by its key and
Redis instance, with an edge from its writer and one edge to each reader (so a stream
read by several agents is visibly one stream, fanned out), and each input's dead-letter
stream as a dashed edge from the reader. ``mermaid`` and ``dot`` only spell that out
in their languages, so the two pictures always say the same thing; ``render`` hands the
DOT text to Graphviz's ``dot`` for SVG and PNG.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass, field
from typing import Literal

from .errors import RenderError
from .graph import Graph, StreamRef

Kind = Literal["agent", "stream", "dead"]
#: Formats Graphviz renders; the text formats are ``mermaid`` and ``dot``.
RENDERED = ("svg", "png")
FORMATS = ("mermaid", "dot", *RENDERED)
#: Generous: Graphviz lays out graphs of hundreds of agents in a few seconds.
RENDER_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class Shape:
    """One thing drawn: ``lines`` are its label, first line the name."""

    id: str
    kind: Kind
    lines: tuple[str, ...]


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    label: str
    dashed: bool = False


@dataclass
class Picture:
    """What is drawn, independent of the language it is drawn in."""

    title: str
    clusters: list[tuple[str, list[Shape]]] = field(default_factory=list)  # (node title, agents on it)
    streams: list[Shape] = field(default_factory=list)  # streams and dead-letter streams
    edges: list[Edge] = field(default_factory=list)


def describe(graph: Graph) -> Picture:
    """Agents, streams, dead-letter streams and their edges, in the graph file's order.

    Shapes get generated ids (``a0``, ``s0``, ``d0``) rather than names, so no agent or
    stream name can collide with a keyword or break the syntax of either language.
    """
    picture = Picture(graph.name)
    agent_ids = {name: f"a{i}" for i, name in enumerate(graph.agents)}
    stream_ids: dict[StreamRef, str] = {}
    dead_ids: dict[StreamRef, str] = {}

    def stream(ref: StreamRef, kind: Kind, ids: dict[StreamRef, str]) -> str:
        if ref not in ids:
            ids[ref] = f"{kind[0]}{len(ids)}"
            picture.streams.append(Shape(ids[ref], kind, (ref.key, f"on {ref.instance}")))
        return ids[ref]

    for node in _nodes_in_use(graph):
        boxes = [Shape(agent_ids[a.name], "agent", _agent_lines(a.name, a.type, a.replicas))
                 for a in graph.agents.values() if a.node == node]
        picture.clusters.append((_node_title(graph, node), boxes))
    for agent in graph.agents.values():
        for port, out in agent.outputs.items():
            picture.edges.append(Edge(agent_ids[agent.name], stream(out.stream, "stream", stream_ids), port))
    for agent in graph.agents.values():
        for port, inp in agent.inputs.items():
            label = port if inp.spec.start == "earliest" else f"{port} (from {inp.spec.start})"
            picture.edges.append(Edge(stream(inp.stream, "stream", stream_ids), agent_ids[agent.name], label))
    for agent in graph.agents.values():
        for port, inp in agent.inputs.items():
            dead = stream(inp.dead_letter, "dead", dead_ids)
            picture.edges.append(Edge(agent_ids[agent.name], dead, f"{port}: dead letters", dashed=True))
    return picture


def _nodes_in_use(graph: Graph) -> list[str]:
    """The graph's nodes that run agents, declared ones first, in the file's order."""
    used = {a.node for a in graph.agents.values()}
    return [n for n in graph.nodes if n in used] + sorted(used - set(graph.nodes))


def _node_title(graph: Graph, node: str) -> str:
    spec = graph.nodes.get(node)
    platform = f" ({spec.platform})" if spec is not None and spec.platform else ""
    return f"node {node}{platform}"


def _agent_lines(name: str, type_: str, replicas: int) -> tuple[str, ...]:
    return (name, type_ if replicas == 1 else f"{type_} ×{replicas}")


# --- Mermaid ------------------------------------------------------------------------------

_MERMAID_SHAPES = {"agent": ('["', '"]'), "stream": ('[("', '")]'), "dead": ('[("', '")]')}


def mermaid(picture: Picture) -> str:
    """A Mermaid flowchart (GitHub and GitLab draw it in Markdown)."""
    out = ["flowchart LR"]
    for i, (title, boxes) in enumerate(picture.clusters):
        out.append(f'  subgraph n{i}["{_mermaid_text(title)}"]')
        out.extend(f"    {_mermaid_shape(box)}" for box in boxes)
        out.append("  end")
    out.extend(f"  {_mermaid_shape(s)}" for s in picture.streams)
    for e in picture.edges:
        arrow = "-.->" if e.dashed else "-->"
        out.append(f'  {e.source} {arrow}|"{_mermaid_text(e.label)}"| {e.target}')
    out.append("  classDef stream fill:#eef5ff,stroke:#4a78b5")
    out.append("  classDef dead fill:#fff0f0,stroke:#b22222,stroke-dasharray:4 3")
    for kind in ("stream", "dead"):
        ids = [s.id for s in picture.streams if s.kind == kind]
        if ids:
            out.append(f"  class {','.join(ids)} {kind}")
    return "\n".join(out) + "\n"


def _mermaid_shape(shape: Shape) -> str:
    opening, closing = _MERMAID_SHAPES[shape.kind]
    first, *rest = (_mermaid_text(line) for line in shape.lines)
    label = "<br/>".join([f"<b>{first}</b>" if shape.kind == "agent" else first, *rest])
    return f"{shape.id}{opening}{label}{closing}"


def _mermaid_text(text: str) -> str:
    """Text inside a quoted Mermaid label: its entity codes, so that a quote, '<', '#' or
    '\\n' in a stream key cannot end the label or be read as markup or a line break."""
    for char, code in (("#", "#35;"), ('"', "#quot;"), ("<", "#lt;"), (">", "#gt;"), ("|", "#124;"),
                       ("\\", "#92;")):
        text = text.replace(char, code)
    return text


# --- DOT (Graphviz) -------------------------------------------------------------------------

_DOT_STYLES = {
    "agent": 'shape=box, style="rounded,filled", fillcolor="#ffffff"',
    "stream": 'shape=cylinder, style=filled, fillcolor="#eef5ff", color="#4a78b5"',
    "dead": 'shape=cylinder, style="dashed,filled", fillcolor="#fff0f0", color="#b22222"',
}


def dot(picture: Picture) -> str:
    """A Graphviz digraph; nodes of the graph become clusters."""
    out = [
        f"digraph {_dot_text(picture.title)} {{",
        "  rankdir=LR;",
        '  node [fontname="Helvetica", fontsize=11];',
        '  edge [fontname="Helvetica", fontsize=9];',
    ]
    for i, (title, boxes) in enumerate(picture.clusters):
        out.append(f"  subgraph cluster_{i} {{")
        out.append(f'    label={_dot_text(title)}; style="rounded,dashed"; color="#888888";')
        out.extend(f"    {_dot_shape(box)}" for box in boxes)
        out.append("  }")
    out.extend(f"  {_dot_shape(s)}" for s in picture.streams)
    for e in picture.edges:
        style = ', style=dashed, color="#b22222"' if e.dashed else ""
        out.append(f"  {e.source} -> {e.target} [label={_dot_text(e.label)}{style}];")
    out.append("}")
    return "\n".join(out) + "\n"


def _dot_shape(shape: Shape) -> str:
    return f"{shape.id} [label={_dot_text(chr(10).join(shape.lines))}, {_DOT_STYLES[shape.kind]}];"


def _dot_text(text: str) -> str:
    """A quoted DOT string; a backslash stays a backslash, not one of DOT's escapes."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


# --- rendering ----------------------------------------------------------------------------------


def render(dot_text: str, fmt: str) -> bytes:
    """SVG or PNG of a DOT text, made by Graphviz's ``dot`` program."""
    if fmt not in RENDERED:
        raise RenderError(f"cannot render {fmt!r}: Graphviz renders {', '.join(RENDERED)}")
    program = shutil.which("dot")
    if program is None:
        raise RenderError(f"{fmt} needs Graphviz's 'dot' program, which is not on PATH: install Graphviz "
                          "(apt-get install graphviz, brew install graphviz) or use --format mermaid or dot")
    try:
        done = subprocess.run([program, f"-T{fmt}"], input=dot_text.encode(), capture_output=True,
                              timeout=RENDER_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        raise RenderError(f"Graphviz's dot took more than {RENDER_TIMEOUT_S:.0f} s to draw the graph") from None
    except OSError as exc:
        raise RenderError(f"could not run Graphviz's dot ({program}): {exc}") from None
    if done.returncode != 0 or not done.stdout:
        raise RenderError(f"Graphviz's dot failed (exit {done.returncode}): "
                          f"{done.stderr.decode(errors='replace').strip() or 'no output'}")
    return done.stdout
