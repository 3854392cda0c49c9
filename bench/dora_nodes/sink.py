"""dora-rs sink node: takes each verdict on the shared board."""

import os
import time

from dora import Node
from hop import Board


def main() -> None:
    node, board = Node(), Board(os.environ["BENCH_BOARD"])
    for event in node:
        if event["type"] == "INPUT":
            meta = event["metadata"]
            board.took(int(meta["seq"]), time.time() - float(meta["t"]))
        elif event["type"] == "STOP":
            break


if __name__ == "__main__":
    main()
