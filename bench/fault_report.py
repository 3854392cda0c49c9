"""Counting a fault run: what was sent, judged, written to the PLC, lost, duplicated, dead-lettered.

Why messages are matched by their chain and not only by part id: a message's envelope
keeps the creation time of the first message of its chain (``t0``), so a verdict names the
very frame it judged. Part ids alone would hide the worst failure a fault can cause, a
camera that restarts its count and sends ids the PLC already holds: the frames are new
parts, but their ids look written. So a frame counts as written to the PLC only if a PLC
result with its part id arrived *after* the frame was taken, and a second write of a part
id is a duplicate only if no new frame with that id was taken in between.

Frames are counted up to the cut-off (the end of the measured window); verdicts and PLC
writes are counted until the end of the drain that follows, so parts still in flight at
the cut-off are not taken for lost.
"""

from __future__ import annotations

import bisect
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from itertools import pairwise

from fault_inject import Injected
from fault_line import PlcWrite
from fault_watch import Entry


@dataclass
class Times:
    """Moments of one run, seconds since the epoch."""

    start: float  # launcher started
    window: float  # the measured window began
    ready: float | None  # first PLC write: the line works
    fault: float | None  # injection began
    fault_done: float | None  # injection returned (after an outage, its end)
    cut: float  # frames taken after this are not counted
    end: float  # end of the drain


@dataclass
class Figures:
    scenario: str
    what: str
    done: str
    rows: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    summary: dict[str, str] = field(default_factory=dict)

    def markdown(self) -> str:
        lines = [f"### {self.scenario}: {self.what}", "", f"Injected: {self.done}.", "",
                 "| figure | value |", "| --- | --- |"]
        lines += [f"| {name} | {value} |" for name, value in self.rows]
        if self.notes:
            lines += [""] + [f"- {n}" for n in self.notes]
        return "\n".join(lines)


@dataclass(frozen=True)
class _Msg:
    producer: str
    part_id: int | None
    t0: float
    camera: str


def _message(entry: Entry) -> _Msg | None:
    h = entry.header
    if h is None:
        return None
    p = entry.payload
    part = p.get("part_id")
    try:
        t0 = float(h.get("t0"))
    except (TypeError, ValueError):
        return None
    return _Msg(entry.stream.producer, part if type(part) is int else None, t0, str(p.get("camera", "")))


def _chain(m: _Msg) -> tuple[str, int | None, float]:
    """A frame and its verdict share camera, part id and chain origin (frames of one trigger share t0)."""
    return m.camera, m.part_id, round(m.t0, 6)


def _reason(text: str) -> str:
    """A dead-letter reason grouped with its kind: numbers and entry ids collapse, long text is cut."""
    text = re.sub(r"\d+(-\d+)?", "N", text)
    return text if len(text) <= 110 else text[:107] + "..."


def _sample(values: list[int], n: int = 8) -> str:
    shown = ", ".join(map(str, values[:n]))
    return f" (part {shown}{', ...' if len(values) > n else ''})" if values else ""


def count(scenario: str, what: str, done: str, entries: list[Entry], writes: list[PlcWrite],
          injected: list[Injected], times: Times, log: list[str]) -> Figures:
    """The figures of one run."""
    fig = Figures(scenario, what, done)
    ours = {(i.key, i.id) for i in injected}
    their_chains = {round(i.t0, 6) for i in injected}
    outputs = [e for e in entries if e.stream.role == "output" and (e.stream.key, e.id) not in ours]
    dead = [e for e in entries if e.stream.role == "dead"]

    frames: list[_Msg] = []
    verdicts: list[_Msg] = []
    parts: list[_Msg] = []  # every message announcing a part: a source's (trigger's), frames
    every_part: list[_Msg] = []  # the same after the cut-off too: for the ids the PLC got
    triggers: list[_Msg] = []  # part messages that are not frames (a trigger's)
    sent: Counter[str] = Counter()
    made_from_injected: Counter[str] = Counter()
    for e in outputs:
        m = _message(e)
        if m is None:
            continue
        if round(m.t0, 6) in their_chains:
            made_from_injected[e.stream.producer or e.stream.key] += 1
            continue
        names_part = m.part_id is not None and e.stream.names_parts
        if names_part:
            every_part.append(m)
        if m.t0 > times.cut:
            continue
        sent[f"{e.stream.producer or e.stream.key} ({e.stream.type_name})"] += 1
        if e.stream.type_name == "Frame":
            frames.append(m)
        elif e.stream.type_name == "Verdict":
            verdicts.append(m)
        elif names_part:
            triggers.append(m)
        if names_part:
            parts.append(m)

    # Triggered parts each camera never photographed (a trigger and its frames share a chain).
    # A frame that lived less than one poll before its Redis died is never seen, yet its
    # verdict proves it was sent: verdicts count as frames of the camera that names itself so.
    cameras = sorted({f.producer for f in frames})
    producer_of = {f.camera: f.producer for f in frames}
    shot = {(f.producer, f.part_id, round(f.t0, 6)) for f in frames}
    shot |= {(producer_of.get(v.camera, ""), v.part_id, round(v.t0, 6)) for v in verdicts}
    unshot = {c: sorted(t.part_id for t in triggers if (c, t.part_id, round(t.t0, 6)) not in shot) for c in cameras}
    seen_only_by_verdict = Counter(c for c, _, _ in shot - {(f.producer, f.part_id, round(f.t0, 6)) for f in frames})
    for name, n in sorted(sent.items()):
        producer = name.rsplit(" (", 1)[0]
        extra = seen_only_by_verdict.get(producer, 0)
        fig.rows.append((f"sent: {name}", f"{n + extra} ({extra} known only by their verdict)" if extra else str(n)))

    # verdicts: one per frame, matched by chain
    verdict_chains = Counter(_chain(v) for v in verdicts)
    no_verdict = sorted({f.part_id for f in frames if _chain(f) not in verdict_chains}, key=lambda x: x or -1)
    no_verdict_frames = sum(1 for f in frames if _chain(f) not in verdict_chains)
    verdicts_twice = sum(n - 1 for n in verdict_chains.values() if n > 1)
    fig.rows.append(("verdicts received", str(len(verdicts))))

    # the PLC: a part is written if a result with its id came after the part's first message
    writes = [w for w in writes if w.received <= times.end]
    by_part: dict[int | None, list[float]] = defaultdict(list)
    for w in writes:
        by_part[w.part_id].append(w.received)
    for t in by_part.values():
        t.sort()
    named_at: dict[int | None, list[float]] = defaultdict(list)
    for m in every_part:
        named_at[m.part_id].append(m.t0)
    for t in named_at.values():
        t.sort()

    def written_after(part: int | None, t0: float) -> bool:
        ts = by_part.get(part, [])
        return bisect.bisect_left(ts, t0) < len(ts)

    lost = sorted({m.part_id for m in parts if not written_after(m.part_id, m.t0)}, key=lambda x: x or -1)
    written_parts = {m.part_id for m in parts if written_after(m.part_id, m.t0)}
    outcomes = Counter(w.outcome for w in writes if w.part_id in written_parts)
    duplicates = []
    for part, ts in by_part.items():
        for a, b in pairwise(ts):
            named = named_at.get(part, [])
            if bisect.bisect_right(named, b) - bisect.bisect_right(named, a) == 0:
                duplicates.append(part)  # no new part of that id between the two writes
    unknown = sorted({w.part_id for w in writes} - {m.part_id for m in every_part} - {None}, key=lambda x: x or -1)
    reused: Counter[str] = Counter()
    seen: dict[tuple[str, int | None], set[float]] = defaultdict(set)
    for m in parts:
        seen[(m.producer, m.part_id)].add(round(m.t0, 6))
    for (producer, _), t0s in seen.items():
        reused[producer] += len(t0s) - 1

    fig.rows.append(("parts (distinct ids sent up to the cut-off)", str(len({m.part_id for m in parts}))))
    for camera in cameras if triggers else ():
        fig.rows.append((f"lost: triggered parts {camera} sent no frame of", f"{len(unshot[camera])}{_sample(unshot[camera])}"))
    fig.rows += [
        ("parts written to the PLC", f"{len(written_parts)} ({', '.join(f'{k} {v}' for k, v in sorted(outcomes.items()))})"),
        ("PLC writes, all (until the end of the drain)", str(len(writes))),
        ("lost: frames with no verdict", f"{no_verdict_frames}{_sample(no_verdict)}"),
        ("lost: parts sent but never written to the PLC", f"{len(lost)}{_sample(lost)}"),
        ("duplicated: parts written twice", f"{len(duplicates)}{_sample(sorted(duplicates, key=lambda x: x or -1))}"),
        ("duplicated: verdicts twice", str(verdicts_twice)),
        ("part ids reused by a sender", ", ".join(f"{k} {v}" for k, v in sorted(reused.items())) or "0"),
        ("PLC writes for part ids never sent", f"{len(unknown)}{_sample(unknown)}"),
    ]

    # dead letters, with reasons
    def injected_chain(e: Entry) -> bool:
        m = _message(e)
        return m is not None and round(m.t0, 6) in their_chains

    dl_ours = [e for e in dead if (e.text("dl:stream"), e.text("dl:id")) in ours or injected_chain(e)]
    dl_real = [e for e in dead if e not in dl_ours]
    fig.rows.append(("dead-lettered", f"{len(dead)} ({len(dl_real)} of the line's messages, {len(dl_ours)} injected)"))
    reasons: Counter[tuple[str, str]] = Counter()
    by_whom: dict[tuple[str, str], set[str]] = defaultdict(set)
    for e in dead:
        origin = "line"
        if (e.text("dl:stream"), e.text("dl:id")) in ours:
            origin = "injected"
        elif injected_chain(e):
            origin = "made from injected"
        key = (origin, _reason(e.text("dl:error")))
        reasons[key] += 1
        by_whom[key].add(e.text("dl:agent"))
    for (origin, reason), n in sorted(reasons.items(), key=lambda kv: (kv[0][0] != "line", -kv[1])):
        agents = ", ".join(sorted(by_whom[(origin, reason)]))
        fig.rows.append((f"dead letter ({origin}) by {agents}", f"{n}: {reason.replace('|', '/')}"))
    if made_from_injected:
        fig.rows.append(("messages the line made from injected entries (not counted above)",
                         ", ".join(f"{k} {v}" for k, v in sorted(made_from_injected.items()))))
    if injected:
        got = {(e.text("dl:agent"), e.text("dl:stream"), e.text("dl:id")) for e in dl_ours}
        missing = [(i, r) for i in injected if i.malformed for r in i.readers if (r, i.key, i.id) not in got]
        expected = sum(len(i.readers) for i in injected if i.malformed)
        fig.rows.append(("malformed entries dead-lettered by every reader", f"{expected - len(missing)} of {expected}"))
        for i, reader in missing:
            fig.notes.append(f"NOT dead-lettered: {reader} on {i.key} {i.id}: {i.kind}")

    # the longest stall: gaps between PLC writes from the first one to the end of the drain
    stall, stall_at = 0.0, None
    if times.ready is not None:
        ts = sorted(w.received for w in writes if w.received >= times.ready) + [times.end]
        for a, b in pairwise(ts):
            if b - a > stall:
                stall, stall_at = b - a, a
    where = ""
    if stall_at is not None:
        fault = f"; fault at {times.fault - times.window:.1f} s" if times.fault is not None else ""
        where = f" (from {stall_at - times.window:.1f} s into the window{fault})"
    fig.rows.append(("longest stall between PLC writes", f"{stall:.1f} s{where}" if times.ready else "no PLC write"))
    if times.ready is not None:
        fig.rows.append(("line ready (first PLC write) after start", f"{times.ready - times.start:.1f} s"))

    notices = [line for line in log if line.startswith("graphrun:") and
               any(w in line for w in ("crashed", "exited", "could not", "killing", "restarting"))]
    fig.rows.append(("launcher restarts and notices", str(len(notices))))
    fig.notes += notices[:6]
    fig.summary = {
        "parts": str(len({m.part_id for m in parts})), "frames": str(len(shot)), "verdicts": str(len(verdicts)),
        "PLC parts": str(len(written_parts)), "incomplete": str(outcomes.get("incomplete", 0)),
        "lost (no verdict)": str(no_verdict_frames), "lost (no PLC)": str(len(lost)),
        "dup writes": str(len(duplicates)), "dup verdicts": str(verdicts_twice),
        "reused ids": str(sum(reused.values())), "dead (line)": str(len(dl_real)),
        "dead (injected)": str(len(dl_ours)), "stall s": f"{stall:.1f}",
    }
    return fig


def unwritten_parts(entries: list[Entry], writes: list[PlcWrite], injected: list[Injected], cut: float) -> int:
    """Parts sent up to ``cut`` (by a trigger or a camera) with no PLC result since: the drain waits on it."""
    ours = {round(i.t0, 6) for i in injected}
    written: dict[int | None, float] = {}
    for w in writes:
        written[w.part_id] = max(written.get(w.part_id, 0.0), w.received)
    open_parts = set()
    for e in entries:
        if e.stream.role != "output" or not e.stream.names_parts:
            continue
        m = _message(e)
        if m is None or m.part_id is None or m.t0 > cut or round(m.t0, 6) in ours:
            continue
        if written.get(m.part_id, 0.0) < m.t0:
            open_parts.add(m.part_id)
    return len(open_parts)


def summary_table(figures: list[Figures]) -> str:
    """One row per scenario: the figures side by side."""
    columns = next((list(f.summary) for f in figures if f.summary), [])
    if not columns:
        return ""
    lines = ["| scenario | " + " | ".join(columns) + " |", "| --- |" + " --- |" * len(columns)]
    lines += [f"| {f.scenario} | " + " | ".join(f.summary.get(c, "") for c in columns) + " |" for f in figures]
    return "\n".join(lines)
