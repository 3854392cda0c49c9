"""``graphrun dead GRAPH [list|show|requeue|purge]``: the dead letters of a graph's inputs.

A message an agent could not handle is kept in ``<stream>:dead`` beside its original
fields, with why (``dl:error``), who (``dl:agent``, ``dl:consumer``) and where it came from
(``dl:stream``, ``dl:id``); see ``graphrun.delivery``. Once the cause is fixed, ``requeue``
puts chosen ones back on their stream: XADD of the original fields, then XDEL from the
dead-letter stream, in that order and in one MULTI/EXEC, so no failure between the two
can lose a message (at worst it is there twice). Every group reading that stream gets
the message again, not just the agent that gave up on it; its envelope id is unchanged,
so a reader that must not see a message twice can tell. Dead letters of malformed
entries may hold only excerpts of their fields (``dl:truncated``); those are refused.
Only the Redis instances have to answer; the agents may be stopped.
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import redis

from .. import locate, transport
from ..cli import add_redis_option
from ..errors import DeadLetterError, GraphNotRunning
from ..follow import entry_id
from ..graph import Graph, InputBinding, StreamRef, load_graph
from ..summary import entry_line, format_age
from ..transport import CONNECTION_ERRORS

PAGE = 100  # dead letters read per XRANGE: each may hold a frame
PREFIX = b"dl:"


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    dead = subparsers.add_parser("dead", help="list, show, requeue or purge the dead letters of a graph's inputs")
    dead.add_argument("graph", type=Path)
    dead.add_argument("action", nargs="?", default="list", choices=["list", "show", "requeue", "purge"],
                      help="list (default); show ID; requeue ID...; purge [ID...] --yes")
    dead.add_argument("ids", nargs="*", metavar="ID", help="dead-letter entry ids, as list prints them")
    dead.add_argument("--stream", metavar="KEY", help="only this stream (an input's stream key, or its dead-letter key)")
    dead.add_argument("--yes", action="store_true", help="purge: really delete")
    add_redis_option(dead)
    dead.set_defaults(func=cmd_dead)


@dataclass(frozen=True)
class Letter:
    """One dead letter, as stored."""

    dead: StreamRef
    id: str
    fields: dict[bytes, bytes]

    def meta(self, name: str, default: str = "?") -> str:
        value = self.fields.get(PREFIX + name.encode())
        return default if value is None else value.decode(errors="replace")

    @property
    def original(self) -> dict[bytes, bytes]:
        """The entry as it was on its stream, without the dl:* fields."""
        return {k: v for k, v in self.fields.items() if not k.startswith(PREFIX)}

    @property
    def truncated(self) -> bool:
        return PREFIX + b"truncated" in self.fields

    def age(self, now: float) -> str:
        try:
            return format_age(now - float(self.meta("time"))) + " ago"
        except ValueError:
            return "at an unknown time"


class DeadLetters:
    """The dead-letter streams of a running graph's inputs that ``--stream`` selects."""

    def __init__(self, graph: Graph, found: locate.RunningGraph, only: str | None):
        self.graph = graph
        self.found = found
        self.streams: dict[StreamRef, list[tuple[str, InputBinding]]] = {}
        for ref, readers in locate.dead_letter_streams(graph).items():
            if only is not None and only != ref.key and all(only != b.key for _, b in readers):
                continue
            if ref.instance not in found.clients:
                print(f"# {ref}: skipped: {found.unreachable.get(ref.instance, 'unreachable')}", file=sys.stderr)
                continue
            self.streams[ref] = readers
        if only is not None and not self.streams:
            known = sorted({b.key for readers in locate.dead_letter_streams(graph).values() for _, b in readers})
            raise DeadLetterError(f"no reachable input of graph {graph.name!r} reads or dead-letters {only!r} "
                                  f"(input streams: {', '.join(known)})")

    def client(self, ref: StreamRef) -> redis.Redis:
        return self.found.client(ref.instance)

    def letters(self, ref: StreamRef) -> Iterator[Letter]:
        """Every dead letter of ``ref``, oldest first, a page at a time."""
        start = "-"
        while True:
            page = self.client(ref).xrange(ref.key, min=start, count=PAGE)
            for raw_id, fields in page:
                yield Letter(ref, raw_id.decode(), fields)
            if len(page) < PAGE:
                return
            start = "(" + page[-1][0].decode()

    def find(self, ids: list[str]) -> list[Letter]:
        """The named dead letters; raises DeadLetterError for an id found nowhere or in two streams."""
        letters = []
        for wanted in ids:
            hits = [Letter(ref, raw_id.decode(), fields) for ref in self.streams
                    for raw_id, fields in self.client(ref).xrange(ref.key, min=wanted, max=wanted)]
            if not hits:
                raise DeadLetterError(f"no dead letter {wanted} in {', '.join(map(str, self.streams)) or 'any stream'}"
                                      " (`graphrun dead GRAPH list` shows them)")
            if len(hits) > 1:
                raise DeadLetterError(f"dead letter {wanted} is in {', '.join(str(h.dead) for h in hits)}: "
                                      "choose one with --stream")
            letters.append(hits[0])
        return letters

    def maxlen(self, ref: StreamRef) -> int | None:
        """The length bound of the stream's writer in the graph, to requeue within it."""
        for node in self.graph.agents.values():
            for output in node.outputs.values():
                if output.stream == ref:
                    return output.maxlen
        return None


def cmd_dead(args: argparse.Namespace) -> int:
    graph = load_graph(args.graph)
    ids = [entry_id(i) for i in args.ids]
    if args.action == "show" and len(ids) != 1:
        raise DeadLetterError("show takes one dead-letter id")
    if args.action == "requeue" and not ids:
        raise DeadLetterError("requeue takes the ids of the dead letters to put back (`list` shows them)")
    if args.action == "list" and ids:
        raise DeadLetterError("list takes no ids; `show ID` shows one dead letter")
    found = locate.connect(graph, dict(args.redis))
    try:
        dead = DeadLetters(graph, found, args.stream)
        action = {"list": _list, "show": _show, "requeue": _requeue, "purge": _purge}[args.action]
        return action(dead, ids, args)
    except CONNECTION_ERRORS as exc:
        raise GraphNotRunning(f"a Redis instance of graph {graph.name!r} stopped answering ({exc})") from exc
    finally:
        found.close()


def _list(dead: DeadLetters, _ids: list[str], _args: argparse.Namespace) -> int:
    now = time.time()
    for ref, readers in dead.streams.items():
        count = dead.client(ref).xlen(ref.key)
        inputs = ", ".join(f"{agent}.{b.port}" for agent, b in readers)
        print(f"{ref}: {count} dead letter(s) (inputs {inputs})")
        for letter in dead.letters(ref):
            flag = " [truncated]" if letter.truncated else ""
            print(f"  {letter.id} {letter.meta('agent')} {letter.meta('stream')}/{letter.meta('id')} "
                  f"{letter.age(now)}{flag}: {letter.meta('error')}")
    return 0


def _show(dead: DeadLetters, ids: list[str], _args: argparse.Namespace) -> int:
    letter = dead.find(ids)[0]
    when = float(letter.meta("time", "0") or 0)
    stamp = datetime.datetime.fromtimestamp(when).isoformat(sep=" ", timespec="seconds") if when else "?"
    print(f"{letter.id} on {letter.dead}")
    print(f"  error: {letter.meta('error')}")
    print(f"  agent: {letter.meta('agent')} (consumer {letter.meta('consumer')})")
    print(f"  from: {letter.meta('stream')} entry {letter.meta('id')}")
    print(f"  dead-lettered: {stamp} ({letter.age(time.time())})")
    if letter.truncated:
        print(f"  truncated fields (bytes they had): {letter.meta('truncated')}; it cannot be requeued")
    print(f"  message: {entry_line(letter.meta('id'), letter.original)}")
    return 0


def _requeue(dead: DeadLetters, ids: list[str], _args: argparse.Namespace) -> int:
    letters = dead.find(ids)
    excerpts = [letter.id for letter in letters if letter.truncated]
    if excerpts:
        raise DeadLetterError(f"dead letter(s) {', '.join(excerpts)} hold only excerpts of a malformed entry "
                              "(dl:truncated): they cannot be requeued; nothing was requeued")
    homeless = [letter.id for letter in letters if PREFIX + b"stream" not in letter.fields]
    if homeless:
        raise DeadLetterError(f"dead letter(s) {', '.join(homeless)} do not say which stream they came from "
                              "(no dl:stream): nothing was requeued")
    for letter in letters:
        target = StreamRef(letter.dead.instance, letter.meta("stream"))
        client = dead.client(letter.dead)
        pipe = client.pipeline(transaction=True)  # XADD first: a failure leaves a copy, never a loss
        maxlen = dead.maxlen(target)
        pipe.xadd(target.key, letter.original, maxlen=maxlen, approximate=True)
        pipe.xdel(letter.dead.key, letter.id)
        new_id, _ = pipe.execute()
        others = _other_groups(client, target.key, letter.meta("agent"))
        note = f" (also read again by {', '.join(others)})" if others else ""
        print(f"requeued {letter.id} to {target} as {new_id.decode()}{note}")
    return 0


def _other_groups(client: redis.Redis, key: str, agent: str) -> list[str]:
    groups = [g["name"].decode() for g in client.xinfo_groups(key)]
    return [g for g in groups if g != agent]


def _purge(dead: DeadLetters, ids: list[str], args: argparse.Namespace) -> int:
    if ids:
        letters = dead.find(ids)
        if not args.yes:
            print(f"purge would delete {len(letters)} dead letter(s) for good: pass --yes", file=sys.stderr)
            return 1
        for letter in letters:
            dead.client(letter.dead).xdel(letter.dead.key, letter.id)
        print(f"purged {len(letters)} dead letter(s)")
        return 0
    # The newest id of each stream, read now: one dead-lettered after this is not purged unseen.
    newest: dict[StreamRef, str] = {}
    counts: dict[StreamRef, int] = {}
    for ref in dead.streams:
        pipe = dead.client(ref).pipeline(transaction=True)
        last, count = pipe.xrevrange(ref.key, count=1).xlen(ref.key).execute()
        if last:
            newest[ref], counts[ref] = last[0][0].decode(), count
    if not args.yes:
        summary = ", ".join(f"{ref}: {n}" for ref, n in counts.items()) or "none"
        print(f"purge would delete every dead letter ({summary}) for good: pass --yes", file=sys.stderr)
        return 1
    for ref, last in newest.items():
        ms, seq = transport.id_tuple(last)
        dead.client(ref).xtrim(ref.key, minid=f"{ms}-{seq + 1}", approximate=False)
        print(f"purged {counts[ref]} dead letter(s) of {ref}")
    return 0
