"""Running `graphrun compose` and `graphrun k8s` as a user does, for their tests."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from graphrun.cli import main


def generate_into(command: str, tmp_path: Path, text: str, *args: str, name: str = "graph.yaml") -> Path:
    """Write ``text`` as graph file ``name`` in ``tmp_path``, run ``graphrun <command>`` on it
    into ``tmp_path/out`` (with ``args``), and return that folder."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    graph = tmp_path / name
    graph.write_text(text)
    out = tmp_path / "out"
    assert main([command, str(graph), "--out", str(out), *args]) == 0
    return out


def fresh_and_committed(command: str, source: Path, committed: Path, out: Path,
                        monkeypatch: pytest.MonkeyPatch) -> tuple[dict[str, str], dict[str, str]]:
    """What ``graphrun <command> source`` writes now, and what ``committed`` holds: file name ->
    text. The variables the graph reads are unset: committed files take the graph's defaults."""
    for name in re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)", source.read_text()):
        monkeypatch.delenv(name, raising=False)
    assert main([command, str(source), "--out", str(out)]) == 0
    fresh = {p.name: p.read_text() for p in sorted(out.iterdir())}
    return fresh, {p.name: p.read_text() for p in sorted(committed.iterdir())}
