"""dora-rs classifier node: the classification agent's model path on each frame."""

import os

import pyarrow as pa
from dora import Node
from pipeline import HEIGHT, WIDTH, SameModel


def main() -> None:
    node, model = Node(), SameModel(identity=os.environ.get("BENCH_IDENTITY") == "1")
    for event in node:
        if event["type"] == "INPUT":
            image = event["value"].to_numpy(zero_copy_only=True).reshape(HEIGHT, WIDTH)
            score = model(image)
            node.send_output("verdict", pa.array([score]), event["metadata"])
        elif event["type"] == "STOP":
            break


if __name__ == "__main__":
    main()
