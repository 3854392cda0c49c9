"""YAML loading that remembers where every value came from.

Validation errors must name the file, line and column of the offending field, so the
loader returns, beside the plain data, the position of every mapping key and value.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from .errors import GraphError, Problem

Path_ = tuple[str | int, ...]

_ENV = re.compile(r"\$\{([^}]*)\}|\$\{")
_ENV_NAME = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)(?::-(.*))?$", re.S)


@dataclass
class Source:
    """Parsed YAML plus positions: ``where(path)`` is the (line, column) of that field."""

    filename: str
    data: Any
    values: dict[Path_, tuple[int, int]] = field(default_factory=dict)
    keys: dict[Path_, tuple[int, int]] = field(default_factory=dict)

    def where(self, path: Path_, *, key: bool = False) -> tuple[int, int]:
        """The closest known position of ``path``, walking up to a parent if needed."""
        table = self.keys if key else self.values
        for n in range(len(path), -1, -1):
            prefix = tuple(path[:n])
            if prefix in table:
                return table[prefix]
            if prefix in self.values:
                return self.values[prefix]
        return (1, 1)

    def problem(self, path: Path_, message: str, *, key: bool = False) -> Problem:
        line, column = self.where(path, key=key)
        return Problem(self.filename, line, column, message, format_path(path))


def format_path(path: Path_) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def load(text: str, filename: str, *, environ: dict[str, str] | None = None) -> Source:
    """Parse ``text``; raise GraphError (with positions) for syntax errors, duplicate keys and bad ${ENV}."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        reason = getattr(exc, "problem", None) or str(exc)
        context = getattr(exc, "context", None)
        raise GraphError([Problem(filename, line, column, f"YAML syntax error: {reason}" + (f" ({context})" if context else ""))]) from None
    source = Source(filename, None)
    problems: list[Problem] = []
    env = os.environ if environ is None else environ
    constructor = yaml.SafeLoader("")  # only its scalar constructors are used

    def build(n: yaml.Node, path: Path_) -> Any:
        source.values[path] = (n.start_mark.line + 1, n.start_mark.column + 1)
        if isinstance(n, yaml.MappingNode):
            out: dict[Any, Any] = {}
            for key_node, value_node in n.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    problems.append(Problem(filename, key_node.start_mark.line + 1, key_node.start_mark.column + 1,
                                            "YAML merge keys (<<) are not supported", format_path(path)))
                    continue
                key = constructor.construct_object(key_node, deep=True)
                if not isinstance(key, (str, int)):
                    key = str(key)
                child = path + (key,)
                if key in out:
                    problems.append(Problem(filename, key_node.start_mark.line + 1, key_node.start_mark.column + 1,
                                            f"duplicate key {key!r}", format_path(child)))
                source.keys[child] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
                out[key] = build(value_node, child)
            return out
        if isinstance(n, yaml.SequenceNode):
            return [build(item, path + (i,)) for i, item in enumerate(n.value)]
        value = constructor.construct_object(n, deep=True)
        if isinstance(value, str) and "$" in value:
            value = _substitute(value, env, lambda msg: problems.append(source.problem(path, msg)))
        return value

    source.data = build(node, ()) if node is not None else None
    if problems:
        raise GraphError(problems)
    return source


def _substitute(value: str, env: Any, report: Any) -> str:
    """Expand ${NAME} and ${NAME:-default}; ``$${`` is a literal ``${``."""

    def replace(match: re.Match[str]) -> str:
        if match.group(1) is None:
            report("unclosed ${ in an environment reference")
            return match.group(0)
        inner = _ENV_NAME.match(match.group(1))
        if not inner:
            report(f"bad environment reference ${{{match.group(1)}}}: use ${{NAME}} or ${{NAME:-default}}")
            return match.group(0)
        name, default = inner.group(1), inner.group(2)
        if name in env:
            return env[name]
        if default is not None:
            return default
        report(f"environment variable {name} is not set (referenced as ${{{name}}})")
        return match.group(0)

    parts = value.split("$${")
    return "${".join(_ENV.sub(replace, part) for part in parts)
