"""YAML loading that remembers where every value came from.

Validation errors must name the file, line and column of the offending field, so the
loader returns, beside the plain data, the position of every mapping key and value.
"""

from __future__ import annotations

import copy
import os
import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from .errors import GraphError, Problem

Path_ = tuple[str | int, ...]

#: Deeper nesting than any graph file needs; bounds the recursion of reading it, so that
#: ``[[[[...`` ten thousand deep is a problem to report, not a RecursionError.
MAX_DEPTH = 64
#: Values that aliases (``*name``) may add by copying what an anchor names. Sharing a few
#: settings needs dozens; an "alias bomb" of 435 bytes would add 10**9.
MAX_ALIAS_VALUES = 10_000
#: Larger than any graph file; keeps ``graphrun validate /dev/zero`` from reading forever.
MAX_BYTES = 4 * 1024 * 1024

_ENV = re.compile(r"\$\{([^}]*)\}|\$\{")
_ENV_NAME = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)(?::-(.*))?$", re.S)


@dataclass
class Source:
    """Parsed YAML plus positions: ``where(path)`` is the (line, column) of that field."""

    filename: str
    data: Any
    values: dict[Path_, tuple[int, int]] = field(default_factory=dict)
    keys: dict[Path_, tuple[int, int]] = field(default_factory=dict)
    #: Problems found while reading that leave the rest of the file readable (an unset
    #: ${ENV}, a duplicate key): reported with the graph's own, so none hides another.
    problems: list[Problem] = field(default_factory=list)
    #: Fields whose value could not be read as written; a check of such a field would only
    #: repeat the problem already reported there.
    spoiled: set[Path_] = field(default_factory=set)

    def is_spoiled(self, path: Path_) -> bool:
        """Whether ``path`` or a field containing it is one whose value could not be read."""
        return any(tuple(path[:n]) in self.spoiled for n in range(len(path) + 1))

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


def decode(data: bytes, filename: str) -> str:
    """The text of a graph file; GraphError at the first byte that is not UTF-8."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line_start = data.rfind(b"\n", 0, exc.start) + 1
        line = data.count(b"\n", 0, exc.start) + 1
        column = len(data[line_start:exc.start].decode("utf-8", "replace")) + 1
        raise GraphError([Problem(filename, line, column, f"the file is not UTF-8 text: byte 0x{data[exc.start]:02x} "
                                                          "cannot be read here (save the file as UTF-8)")]) from None


_UNREADABLE = object()  # what ``load`` builds for a scalar YAML cannot construct


class _TooDeep(yaml.MarkedYAMLError):
    """Raised while composing, at the first node nested deeper than MAX_DEPTH."""


class _AliasBomb(Exception):
    def __init__(self, mark: yaml.Mark):
        self.mark = mark


class _Composer(yaml.SafeLoader):
    """The safe loader's composer, bounded in depth, keeping where each alias stands.

    PyYAML returns an alias as the very node its anchor names, so every use of an alias
    would carry the anchor's line. Here each use is a shallow copy (its children shared,
    so copying costs nothing) with the alias's own position and ``alias_of`` set, so that
    expanding it can be counted and reported where the alias is written.
    """

    def __init__(self, text: str):
        super().__init__(text)
        self._depth = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            anchored = super().compose_node(parent, index)
            alias = copy.copy(anchored)
            alias.start_mark, alias.end_mark = event.start_mark, event.end_mark
            alias.alias_of = anchored
            return alias
        if self._depth >= MAX_DEPTH:
            raise _TooDeep(problem=f"nested more than {MAX_DEPTH} levels deep (a graph file needs a handful)",
                           problem_mark=self.peek_event().start_mark)
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def load(text: str, filename: str, *, environ: dict[str, str] | None = None) -> Source:
    """Parse ``text``. GraphError when the file cannot be read as YAML at all (syntax,
    nesting too deep, an alias bomb); every other problem (duplicate keys, bad ${ENV},
    values YAML cannot construct) is in ``Source.problems``, and reading goes on."""
    try:
        loader = _Composer(text)  # checks the characters first: ReaderError
        try:
            node = loader.get_single_node()
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        raise GraphError([_syntax_problem(exc, text, filename)]) from None
    source = Source(filename, None)
    problems = source.problems
    env = os.environ if environ is None else environ
    constructor = yaml.SafeLoader("")  # only its scalar constructors are used
    building: set[int] = set()  # children lists of the collections being built: an alias to one is recursive
    alias_values = 0

    def at(n: yaml.Node | yaml.Mark) -> tuple[int, int]:
        mark = n if isinstance(n, yaml.Mark) else n.start_mark
        return mark.line + 1, mark.column + 1

    def report(n: yaml.Node, path: Path_, message: str, *, spoil: bool = True) -> None:
        problems.append(Problem(filename, *at(n), message, format_path(path)))
        if spoil:
            source.spoiled.add(path)

    def build(n: yaml.Node, path: Path_, alias: yaml.Mark | None = None) -> Any:
        nonlocal alias_values
        source.values[path] = at(n)
        if getattr(n, "alias_of", None) is not None:
            if id(n.value) in building:
                report(n, path, f"recursive alias *{_anchor_name(n)}: it is used inside the value its anchor names")
                return None
            alias = alias or n.start_mark  # the outermost alias is the one written in the file's own tree
        if alias is not None:
            alias_values += 1
            if alias_values > MAX_ALIAS_VALUES:
                raise _AliasBomb(alias)
        if len(path) > MAX_DEPTH:
            report(n, path, f"nested more than {MAX_DEPTH} levels deep (counting what aliases copy in)")
            return None
        if isinstance(n, yaml.MappingNode):
            building.add(id(n.value))
            try:
                return build_mapping(n, path, alias)
            finally:
                building.discard(id(n.value))
        if isinstance(n, yaml.SequenceNode):
            building.add(id(n.value))
            try:
                return [build(item, path + (i,), alias) for i, item in enumerate(n.value)]
            finally:
                building.discard(id(n.value))
        value = construct(n, path)
        if value is _UNREADABLE:
            return None
        if isinstance(value, str) and "$" in value:
            def unresolved(message: str) -> None:
                report(n, path, message)
            value = _substitute(value, env, unresolved)
        return value

    def build_mapping(n: yaml.MappingNode, path: Path_, alias: yaml.Mark | None) -> dict[Any, Any]:
        out: dict[Any, Any] = {}
        for key_node, value_node in n.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                report(key_node, path, "YAML merge keys (<<) are not supported", spoil=False)
                continue
            if not isinstance(key_node, yaml.ScalarNode):
                report(key_node, path, "a key must be a plain value, not a list or mapping", spoil=False)
                continue
            key = construct(key_node, path, spoil=False)
            if key is _UNREADABLE:
                continue
            if not isinstance(key, (str, int)):
                key = str(key)
            child = path + (key,)
            if key in out:
                report(key_node, child, f"duplicate key {key!r}", spoil=False)
            source.keys[child] = at(key_node)
            out[key] = build(value_node, child, alias)
        return out

    def construct(n: yaml.Node, path: Path_, *, spoil: bool = True) -> Any:
        """A scalar's value; a problem (and _UNREADABLE) for what YAML cannot construct:
        unknown tags (``!plc``), impossible dates, integers too long to convert. A key
        that cannot be read spoils nothing: its mapping's other keys are still checked."""
        try:
            return constructor.construct_object(n, deep=True)
        except yaml.MarkedYAMLError as exc:
            report(n, path, f"cannot read the value {n.value!r}: {exc.problem}", spoil=spoil)
        except Exception as exc:  # noqa: BLE001 - PyYAML's constructors fail in many ways on odd input ('!!int ""')
            report(n, path, f"cannot read the value {n.value!r}: {exc or type(exc).__name__}", spoil=spoil)
        return _UNREADABLE

    try:
        source.data = build(node, ()) if node is not None else None
    except _AliasBomb as bomb:
        raise GraphError(problems + [Problem(
            filename, *at(bomb.mark),
            f"aliases expand to more than {MAX_ALIAS_VALUES} values; a graph file needs far fewer "
            "(is this a YAML alias bomb?)")]) from None
    return source


def _anchor_name(alias: yaml.Node) -> str:
    """The name an alias node was written with (``*name``), read back from the file's text."""
    mark = alias.start_mark
    found = re.match(r"\*([^\s,\[\]{}]+)", mark.buffer[mark.pointer:mark.pointer + 200]) if mark.buffer else None
    return found.group(1) if found else "?"


def _syntax_problem(exc: yaml.YAMLError, text: str, filename: str) -> Problem:
    """A YAML error as a Problem at the line that is wrong, saying "indentation" when the
    parser's complaint (``expected <block end>``, ``mapping values are not allowed``) is,
    in a hand-written graph file, nearly always a line indented wrongly."""
    if isinstance(exc, yaml.reader.ReaderError):
        before = text[:exc.position]
        line, column = before.count("\n") + 1, exc.position - before.rfind("\n")
        return Problem(filename, line, column, f"character U+{exc.character:04X} is not allowed in a YAML file")
    if isinstance(exc, _TooDeep):
        mark = exc.problem_mark
        return Problem(filename, mark.line + 1, mark.column + 1, str(exc.problem))
    mark = getattr(exc, "problem_mark", None)
    if mark is None:
        return Problem(filename, 1, 1, f"YAML syntax error: {exc}")
    reason = getattr(exc, "problem", None) or str(exc)
    context = getattr(exc, "context", None)
    context_mark = getattr(exc, "context_mark", None)
    lines = text.splitlines()
    row = lines[mark.line] if mark.line < len(lines) else ""
    indent = _indent(row)

    def problem(message: str, column: int = indent + 1) -> Problem:
        return Problem(filename, mark.line + 1, column, message)

    if "'\\t'" in reason or "'\t'" in reason:
        return problem("bad indentation: a tab where YAML expects a space (indent with spaces only)", mark.column + 1)
    if context and context.startswith("found duplicate anchor") and context_mark is not None:
        return problem(f"YAML syntax error: {context.split(';')[0]} (first at line {context_mark.line + 1})",
                       mark.column + 1)
    if any(s in reason for s in ("expected <block end>", "did not find expected key", "expected '-' indicator")):
        levels = _enclosing_indents(lines, mark.line)
        if indent not in levels:
            shown = " or ".join([", ".join(str(n) for n in levels[:-1]), str(levels[-1])] if len(levels) > 1
                                else [str(n) for n in levels] or ["0"])
            return problem(f"bad indentation: this line is indented {indent} spaces, which matches no block above it "
                           f"(indented {shown})")
        if row.lstrip().startswith("- "):
            return problem("bad indentation: a list item ('- ') level with the keys of a mapping; "
                           "indent the list under its key")
    if reason == "mapping values are not allowed here":
        above = _previous_content_line(lines, mark.line)
        if above is not None and mark.line != above and indent > _indent(lines[above]) \
                and re.search(r":\s+[^\s#]", lines[above]):
            return problem(f"bad indentation: this line is indented deeper than line {above + 1}, "
                           "whose key already has a value")
        if above is not None and mark.line != above and indent == _indent(lines[above]) \
                and re.search(r"^\s*[^\s:#'\"]+:[^\s:]", lines[above]) and ": " not in lines[above]:
            return Problem(filename, above + 1, _indent(lines[above]) + 1,
                           "not 'key: value': a space must follow the ':' (YAML reads this line and the next as one text)")
    where = f" at line {context_mark.line + 1}" if context and context_mark is not None else ""
    return problem(f"YAML syntax error: {reason}" + (f" ({context}{where})" if context else ""), mark.column + 1)


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _previous_content_line(lines: list[str], index: int) -> int | None:
    for i in range(index - 1, -1, -1):
        if lines[i].strip() and not lines[i].lstrip().startswith("#"):
            return i
    return None


def _enclosing_indents(lines: list[str], index: int) -> list[int]:
    """The indentations a line at ``index`` could have: those of the lines above that
    open the blocks it may belong to (each less indented than the ones after it)."""
    levels: list[int] = []
    i = _previous_content_line(lines, index)
    while i is not None:
        depth = _indent(lines[i])
        if not levels or depth < levels[-1]:
            levels.append(depth)
        if depth == 0:
            break
        i = _previous_content_line(lines, i)
    return sorted(levels)


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
