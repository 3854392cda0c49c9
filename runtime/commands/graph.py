"""``graphrun graph GRAPH``: a picture of the graph, from the graph file alone.

Mermaid and DOT are text, printed or written to ``-o FILE``; SVG and PNG are drawn by
Graphviz's ``dot``. No Redis is contacted, so a graph can be drawn before it ever runs
(``--redis`` is accepted like by every command, and changes nothing in the picture).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .. import picture
from ..cli import add_redis_option
from ..errors import ConfigError
from ..graph import load_graph


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    cmd = subparsers.add_parser("graph", help="draw a graph: agents by node, streams, fan-out, dead letters")
    cmd.add_argument("graph", type=Path, help="the graph file (the graph need not be running)")
    cmd.add_argument("--format", choices=picture.FORMATS,
                     help="default: from the -o file's suffix (.mmd/.md, .dot/.gv, .svg, .png), else mermaid")
    cmd.add_argument("-o", "--output", type=Path, metavar="FILE", help="write here instead of standard output")
    add_redis_option(cmd)
    cmd.set_defaults(func=cmd_graph)


_SUFFIXES = {".mmd": "mermaid", ".mermaid": "mermaid", ".md": "mermaid", ".dot": "dot", ".gv": "dot",
             ".svg": "svg", ".png": "png"}


def output_format(fmt: str | None, output: Path | None) -> str:
    """The format asked for, else the one the output file's suffix names, else mermaid."""
    if fmt:
        return fmt
    if output is None:
        return "mermaid"
    try:
        return _SUFFIXES[output.suffix.lower()]
    except KeyError:
        raise ConfigError(f"cannot tell the format from {output.name!r}: give --format "
                          f"({', '.join(picture.FORMATS)})") from None


def cmd_graph(args: argparse.Namespace) -> int:
    fmt = output_format(args.format, args.output)
    drawn = picture.describe(load_graph(args.graph))
    if fmt == "mermaid":
        data = picture.mermaid(drawn).encode()
    else:
        text = picture.dot(drawn)
        data = text.encode() if fmt == "dot" else picture.render(text, fmt)
    if args.output is not None:
        try:
            args.output.write_bytes(data)
        except OSError as exc:
            raise ConfigError(f"cannot write {args.output}: {exc.strerror or exc}") from None
        return 0
    if fmt == "png" and sys.stdout.isatty():
        raise ConfigError("a PNG is not for a terminal: write it with -o FILE.png or redirect the output")
    sys.stdout.flush()
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()
    return 0
