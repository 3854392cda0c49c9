"""dora-rs source node: the pipeline's frames, numbered, at most BENCH_WINDOW unanswered."""

import os
import time

import pyarrow as pa
from dora import Node
from hop import POLL, Board
from pipeline import frames

from graphrun.pacing import Pacer

STALL = 1.0  # seconds without a verdict, with a full window, after which its frames count as lost


def main() -> None:
    node, board, images = Node(), Board(os.environ["BENCH_BOARD"]), frames()
    window, pace, seq = int(os.environ["BENCH_WINDOW"]), Pacer(float(os.environ["BENCH_RATE"]) or None), 0
    progress, since = -1, time.monotonic()
    while not board.stopped:
        event = node.next(timeout=0.0001)
        if event is not None and event["type"] == "STOP":
            break
        if not board.room(seq, window):
            if board.consumed != progress:
                progress, since = board.consumed, time.monotonic()
            elif time.monotonic() - since > STALL:  # the rest of the window was dropped
                board.give_up(seq)
            time.sleep(POLL)
            continue
        pace.wait(lambda s: (time.sleep(s), False)[1])
        image = images[seq % len(images)]
        node.send_output("frame", pa.array(image.reshape(-1)), {"seq": seq, "t": time.time()})
        seq += 1


if __name__ == "__main__":
    main()
