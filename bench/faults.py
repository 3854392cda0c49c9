"""Fault runs of a line: what a crash, a Redis loss, a PLC outage or bad data costs, in figures.

    python bench/faults.py                                   # every scenario, 60 s each
    python bench/faults.py --scenario kill-cls_front --seconds 30
    python bench/faults.py --list                            # the scenarios of the graph

Each scenario is one run of the line (``graphrun run`` on a private copy of the graph, see
``fault_line.py``), with one fault injected a third of the way into the measured window:

* ``baseline``: nothing, for comparison;
* ``kill-AGENT``: kill -9 of every process of one agent (the launcher restarts it);
* ``kill-redis-INSTANCE``: kill -9 of one redis-server the launcher started (it restarts it);
* ``plc-stop``: the PLC link down for ``--outage`` seconds, PLC memory kept;
* ``plc-restart``: the PLC gone and back 1 s later with cleared memory (what a killed
  ``plc_sim`` agent, or a power-cycled PLC, looks like to the Modbus agent);
* ``malformed``: on every input stream, entries without header, with bad JSON, an unknown
  schema, a non-mapping payload, missing keys, values of the wrong types (a verdict with
  ``score: "high"`` and ``part_id: true``), a truncated array buffer, and a well-typed entry
  with ``part_id: -1`` (no PLC register holds it: whoever would write it must refuse it).

Then it counts, from the streams (watched during the run, see ``fault_watch.py``) and the
PLC's record: messages sent per producer, verdicts, parts written to the PLC (with their
outcomes), frames with no verdict, parts sent (by a trigger or a camera) but never written
to the PLC, triggered parts a camera sent no frame of, parts written twice, verdicts twice,
part ids reused, dead letters by reason (the line's own apart from the injected ones), and
the longest gap between PLC writes (see ``fault_report.py``). One markdown table per
scenario, and a summary table at the end. Messages taken up to the end of the window count;
a drain after it (until every part sent in the window has a PLC result, at most ``--drain``
seconds) lets parts in flight reach the PLC before the line is stopped, so a part still in
flight is not taken for lost, and one missing after the drain is.

A run takes ``--seconds`` plus the line's start (5-20 s), the drain and the stop: the 14
scenarios of the finger-follower line at 60 s take 20 to 25 minutes.

Everything stays on this machine: Redis on its unix sockets (and 127.0.0.1), the PLC and
the HMI on free 127.0.0.1 ports. Everything started is stopped at the end, Ctrl-C included.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from types import FrameType

from fault_inject import Scenario, scenarios
from fault_line import Line
from fault_report import Figures, Times, count, summary_table, unwritten_parts
from fault_watch import Watcher, dump, watched_streams
from graphrun import GraphrunError, load_graph
from graphrun_agents.modbus.sim_agent import PlcSimAgent

ROOT = Path(__file__).resolve().parent.parent


def say(text: str) -> None:
    print(f"[faults] {text}", file=sys.stderr, flush=True)


def _sleep_until(moment: float, line: Line) -> None:
    """Sleep, noticing a launcher that died (the run would measure nothing)."""
    while (left := moment - time.time()) > 0:
        line.check_alive()
        time.sleep(min(0.5, left))


def run_scenario(scenario: Scenario, graph_file: Path, folder: Path, args: argparse.Namespace) -> Figures:
    """One run: start the line, wait for its first PLC write, inject the fault, measure, stop."""
    line = Line(graph_file, folder)
    for note in line.notes:
        say(note)
    watcher: Watcher | None = None
    done = "nothing (the run ended before the fault)"
    fault = fault_done = ready = None
    start = window = time.time()
    try:
        line.start()
        urls = line.redis_urls()
        watcher = Watcher(urls, watched_streams(line.graph))
        watcher.start()
        deadline = time.time() + args.warmup
        while not line.writes() and time.time() < deadline:
            line.check_alive()
            time.sleep(0.2)
        writes = line.writes()
        ready = writes[0].received if writes else None
        say(f"{scenario.name}: " + (f"first PLC write after {ready - start:.1f} s" if ready else
                                     f"no PLC write within {args.warmup:.0f} s; measuring anyway"))
        window = time.time()
        _sleep_until(window + args.seconds * args.fault_at, line)
        fault = time.time()
        done = scenario.inject(line, urls)
        fault_done = time.time()
        say(f"{scenario.name}: {done}")
        cut = window + args.seconds
        _sleep_until(cut, line)
        while time.time() < cut + args.drain:
            _sleep_until(time.time() + 1.0, line)
            if not unwritten_parts(watcher.snapshot(), line.writes(), scenario.injected, cut):
                break
        end = time.time()
    finally:
        if watcher is not None:
            watcher.stop()  # one last round while Redis still runs
        line.stop()
    times = Times(start=start, window=window, ready=ready, fault=fault, fault_done=fault_done, cut=cut, end=end)
    entries = watcher.snapshot()
    if args.keep is not None:
        dump(entries, folder / "entries.jsonl")
        (folder / "plc.jsonl").write_text("".join(json.dumps(asdict(w)) + "\n" for w in line.writes()))
    return count(scenario.name, scenario.what, done, entries, line.writes(), scenario.injected, times,
                 line.log_lines())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--graph", type=Path, default=ROOT / "graphs" / "finger_follower.yaml")
    parser.add_argument("--scenario", action="append", default=[], metavar="NAME",
                        help="run only this scenario (repeatable, or comma-separated; default: all, in order)")
    parser.add_argument("--list", action="store_true", help="print the graph's scenarios and exit")
    parser.add_argument("--seconds", type=float, default=60.0, help="measured window per scenario")
    parser.add_argument("--fault-at", type=float, default=1 / 3, help="when in the window the fault comes (0..1)")
    parser.add_argument("--outage", type=float, default=10.0, help="seconds the PLC link stays down in plc-stop")
    parser.add_argument("--warmup", type=float, default=120.0, help="longest wait for the first PLC write")
    parser.add_argument("--drain", type=float, default=30.0,
                        help="longest wait after the window for the parts sent in it to reach the PLC")
    parser.add_argument("--keep", type=Path, help="keep each run's graph copy, Redis data and launcher log here")
    args = parser.parse_args(argv)
    if not 0 <= args.fault_at < 1:
        parser.error("--fault-at must be in [0, 1)")

    try:
        graph = load_graph(args.graph)
    except GraphrunError as exc:
        parser.exit(2, f"{exc}\n")
    every = [s for s in scenarios(graph, outage=args.outage, skip=(PlcSimAgent,))]
    if args.list:
        for s in every:
            print(f"{s.name:28} {s.what}")
        return 0
    wanted = [n.strip() for item in args.scenario for n in item.split(",") if n.strip()]
    unknown = sorted(set(wanted) - {s.name for s in every})
    if unknown:
        parser.error(f"unknown scenario(s) {', '.join(unknown)}; known: {', '.join(s.name for s in every)}")
    chosen = [s for s in every if not wanted or s.name in wanted]

    # SIGTERM ends the run as Ctrl-C does: through the finally blocks that stop the line. SIGINT
    # is set too, since a shell starting the harness in the background leaves it ignored.
    def interrupted(signum: int, frame: FrameType | None) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)  # a second Ctrl-C must not cut the stop short (it is bounded)
        raise KeyboardInterrupt

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, interrupted)
    work = args.keep or Path(tempfile.mkdtemp(prefix="graphrun-faults-"))
    figures: list[Figures] = []
    try:
        for scenario in chosen:
            say(f"{scenario.name}: {scenario.what} ({args.seconds:.0f} s window, drain up to {args.drain:.0f} s)")
            try:
                fig = run_scenario(scenario, args.graph, (work / scenario.name).resolve(), args)
            except (RuntimeError, GraphrunError) as exc:  # launcher died, graph mid-edit: the next run may fare better
                say(f"{scenario.name}: no figures: {exc}")
                fig = Figures(scenario.name, scenario.what, "see the note", notes=[f"no figures: {exc}"])
            figures.append(fig)
            print(fig.markdown() + "\n", flush=True)
    except KeyboardInterrupt:
        say("interrupted: everything started was stopped")
        return 130
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
        else:
            say(f"graph copies, Redis data and launcher logs are in {work}")
    if len(figures) > 1:
        print("### Summary\n\n" + summary_table(figures), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
