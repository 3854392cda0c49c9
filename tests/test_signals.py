"""A stop signal never hangs a process: the handler takes no lock.

Seen: a launcher that never ended after Ctrl-C, because its handler called Event.set()
while the main thread was inside Event.wait() of the same event (a lock that is not
re-entrant). The signal is now relayed to a thread through the interpreter's wakeup pipe.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from test_launcher import ROOT, Graphrun

BUSY_WAITER = textwrap.dedent("""\
    import signal, threading, time
    from graphrun import signals

    stop, calls = threading.Event(), []
    with signals.calling_on(lambda signum: (calls.append(signum), stop.set()), [signal.SIGUSR1]):
        print("ready", flush=True)
        end = time.monotonic() + 8
        while time.monotonic() < end:  # the main thread lives in wait() and set() of the event the signal sets
            stop.wait(0.0001)
            stop.clear()
    print("alive", len(calls), flush=True)
""")


def test_a_thousand_signals_into_a_thread_waiting_on_the_event_they_set_never_hang_it(tmp_path: Path) -> None:
    script = tmp_path / "waiter.py"
    script.write_text(BUSY_WAITER)
    child = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert child.stdout is not None and child.stdout.readline() == "ready\n"
    for _ in range(1000):
        os.kill(child.pid, signal.SIGUSR1)
        time.sleep(0.001)
    out, err = child.communicate(timeout=60)  # a hang would stop here
    assert child.returncode == 0, err
    assert out.startswith("alive ") and int(out.split()[1]) > 0 and "Traceback" not in err


def test_ctrl_c_pressed_again_and_again_still_ends_a_run(tmp_path: Path) -> None:
    run = Graphrun(str(ROOT / "graphs" / "hello.yaml"), "--state-dir", str(tmp_path / "state"), cwd=tmp_path)
    run.wait_for(lambda out: "printer   | values:" in out, what="values printed")
    for _ in range(30):
        run.process.send_signal(signal.SIGINT)
        time.sleep(0.01)
    out = run.finish(timeout=60)
    assert run.process.returncode == 0, out
    assert "Traceback" not in out
