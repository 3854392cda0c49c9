"""`graphrun archive`: find archived parts by part id, time, label or outcome.

    graphrun archive graphs/finger_follower.yaml --part 1234
    graphrun archive graphs/finger_follower.yaml --label crack --since 2026-12-01
    graphrun archive graphs/finger_follower.yaml --since 8h --json

Times are ISO dates or date-times (local time unless they name a zone) or an age such as
30m, 8h or 7d. The archive is the one the graph's archive agent keeps (``--agent`` names
it when the graph has several; ``--directory`` reads a copied archive instead). The
index is only read: it may be queried while the line runs.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from datetime import datetime, timedelta
from pathlib import Path

from graphrun import GraphrunError, load_graph

from .index import Entry, Index
from .params import ArchiveParams, archive_directory

AGE = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhd])$")
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "archive",
        help="find archived (rejected) parts by part id, time, label or outcome",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("graph", help="the graph file whose archive agent keeps the archive")
    parser.add_argument("--agent", help="the archive agent's name (needed when the graph has several)")
    parser.add_argument("--directory", help="read the archive in this directory instead of the agent's")
    parser.add_argument("--part", type=int, help="the part id")
    parser.add_argument("--label", help="the defect label, e.g. crack")
    parser.add_argument("--outcome", choices=["defective", "incomplete"], help="what the PLC was given")
    parser.add_argument("--since", type=when, help="parts from this time on (a date-time, or an age: 8h)")
    parser.add_argument("--until", type=when, help="parts before this time")
    parser.add_argument("--limit", type=int, default=1000, help="show the newest N matches (default 1000)")
    parser.add_argument("--json", action="store_true", help="one JSON object per part: its whole record")
    parser.set_defaults(func=run)


def when(text: str) -> float:
    """Seconds since the epoch of an ISO date(-time) (local unless zoned) or of an age (30m, 8h, 7d)."""
    age = AGE.match(text.strip())
    if age:
        return (datetime.now() - timedelta(seconds=float(age.group(1)) * UNITS[age.group(2)])).timestamp()
    try:
        return datetime.fromisoformat(text.strip()).timestamp()
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is neither a date-time (2026-12-02, 2026-12-02T14:30) nor an age (30m, 8h, 7d)"
        ) from None


def directory_of(graph_file: str, agent: str | None) -> Path:
    """The archive directory of the graph's archive agent."""
    graph = load_graph(graph_file)
    archives = [a for a in graph.agents.values() if a.type == "archive"]
    if agent is not None:
        chosen = graph.agents.get(agent)
        if chosen is None or chosen.type != "archive":
            names = ", ".join(a.name for a in archives) or "none"
            raise GraphrunError(f"{graph_file} has no archive agent {agent!r} (archive agents: {names})")
    elif len(archives) == 1:
        chosen = archives[0]
    elif not archives:
        raise GraphrunError(f"{graph_file} has no agent of type archive")
    else:
        raise GraphrunError(f"{graph_file} has several archive agents ({', '.join(a.name for a in archives)}): "
                            "name one with --agent")
    assert isinstance(chosen.settings, ArchiveParams)
    return archive_directory(chosen.settings, graph.name, chosen.name)


def run(args: argparse.Namespace) -> int:
    try:
        directory = Path(args.directory).resolve() if args.directory else directory_of(args.graph, args.agent)
        index = Index(directory, readonly=True)
    except (GraphrunError, FileNotFoundError) as exc:
        print(f"graphrun archive: {exc}", file=sys.stderr)
        return 2
    try:
        found = index.query(part_id=args.part, label=args.label, outcome=args.outcome, since=args.since,
                            until=args.until, limit=args.limit)
    finally:
        index.close()
    if args.json:
        for entry in found:
            print(json.dumps({**entry.record, "folder": str(directory / entry.path)}, sort_keys=True))
        return 0 if found else 1
    if not found:
        print(f"no archived part matches (archive: {directory})", file=sys.stderr)
        return 1
    print(table(found, directory))
    if args.part is not None:
        for entry in found:
            print(details(entry, directory))
    return 0


def table(entries: list[Entry], directory: Path) -> str:
    rows = [("TIME", "PART", "OUTCOME", "LABEL", "SCORE", "MODEL", "PLC SEQ", "FOLDER")]
    for e in entries:
        rows.append((datetime.fromtimestamp(e.time).astimezone().isoformat(timespec="seconds"), str(e.part_id),
                     e.outcome, e.label, f"{e.score:.3f}", e.model_versions or "-",
                     "-" if e.plc_sequence is None else str(e.plc_sequence), str(directory / e.path)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def details(entry: Entry, directory: Path) -> str:
    record = entry.record
    lines = [f"\npart {entry.part_id} ({directory / entry.path})"]
    for port, frame in record.get("frames", {}).items():
        lines.append(f"  image {port}: {frame.get('file', '-')} ({frame.get('camera', '?')}, "
                     f"{frame.get('pixel_format', '?')} {frame.get('width', '?')}x{frame.get('height', '?')}, "
                     f"frame {frame.get('frame', '?')})")
    for port, verdict in record.get("verdicts", {}).items():
        score = verdict.get("score")
        shown = f"{score:.4f}" if isinstance(score, (int, float)) else score
        lines.append(f"  verdict {port}: {verdict.get('label')} score {shown} "
                     f"(model {record.get('models', {}).get(port, '?')})")
    plc = record.get("plc")
    lines.append(f"  PLC: {plc['outcome']} sequence {plc.get('sequence')}" if plc else "  PLC: no result")
    if record.get("missing"):
        lines.append(f"  missing: {', '.join(record['missing'])}")
    return "\n".join(lines)
