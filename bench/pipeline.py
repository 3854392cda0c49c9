"""source -> classifier -> sink, three ways, with the same frames and the same model.

The pieces of bench/e2e.py's side-by-side table. A source sends 1280x1024 mono8 frames
(eight synthetic parts, cycled: every pipeline sends the same pixels), a classifier runs
the shipped defect model on each (the classification agent's own pre-processing and
ONNX Runtime session, ``SameModel``), a sink takes each verdict. The source never has
more than ``window`` frames unanswered (a ``hop.Board`` shared by the three processes),
so what is measured is the rate the pipeline sustains, and a frame that never reaches
the sink shows as a gap in the sequence numbers: lost.

- ``graphrun``: three agents, each run by graphrun's runner in its own process, on a
  redis-server (the classification agent is the shipped one, ``batch.max_size`` 1 unless
  told otherwise); with ``frames=True`` the graph's ``frame_store`` is set, so frames go
  through shared memory and the stream carries references;
- ``redis-py``: three hand-written processes calling tuned redis-py directly
  (XADD / XREADGROUP COUNT 1 / XACK, unix socket, memoryview payloads): the floor for any
  Redis-based design;
- ``dora``: three Python nodes in a dora-rs dataflow (``dora run``), frames as Arrow
  arrays through dora's shared memory.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel

sys.path.insert(0, str(Path(__file__).resolve().parent))

from hop import POLL, Board, frame_store_setting, raw_client  # noqa: E402

from graphrun import Agent, Input, Message, Output  # noqa: E402
from graphrun.graph import Graph, parse_graph  # noqa: E402
from graphrun.pacing import Pacer  # noqa: E402
from graphrun.redis_server import RedisServer  # noqa: E402
from graphrun_agents.messages import Frame, Verdict  # noqa: E402

WIDTH, HEIGHT = 1280, 1024
FRAMES_STREAM, VERDICTS_STREAM = "bench.frames", "bench.verdicts"
MAXLEN = 50
DORA_NODES = Path(__file__).resolve().parent / "dora_nodes"


@cache
def frames(count: int = 8) -> tuple[np.ndarray, ...]:
    """The same synthetic parts for every pipeline (rendered once per process)."""
    from graphrun_agents.camera.synthetic import SyntheticConfig, render_part

    config = SyntheticConfig(width=WIDTH, height=HEIGHT, seed=303, view="front")
    return tuple(render_part(i, config)[0] for i in range(count))


class SameModel:
    """The classification agent's model path for one frame: its pre-processing, its ONNX
    Runtime session, its score. ``identity``: a model that costs nothing (the brightest
    pixel of the same pre-processed input), for the pipeline's own cost."""

    def __init__(self, *, identity: bool = False) -> None:
        from graphrun_agents.classification import backends
        from graphrun_agents.classification.model import DEFAULT_MODEL, defect_scores, read_model, spec_for
        from graphrun_agents.classification.params import ClassificationParams
        from graphrun_agents.classification.preprocess import Preprocessor

        blob = identity_model() if identity else read_model(DEFAULT_MODEL)
        self._model = backends.load("onnxruntime", blob, ClassificationParams(backend="onnxruntime"))
        self._pre = Preprocessor(spec_for(self._model.info, {}, "bench"))
        self._scores = defect_scores

    def __call__(self, image: np.ndarray) -> float:
        tensor = self._pre.normalise([self._pre.resized(image)])
        output, _cells = self._model.run_with_map(tensor)
        return float(self._scores(output)[0])


@cache
def identity_model() -> bytes:
    """A model with the shipped model's input and pre-processing that does (almost) nothing."""
    from graphrun_agents.classification.model import DEFAULT_MODEL, inspect, read_model
    from graphrun_agents.classification.toy_models import brightest_pixel_model

    info = inspect(read_model(DEFAULT_MODEL))
    _, _, height, width = info.input_shape
    return brightest_pixel_model(int(height), int(width), preprocess=info.preprocess, name="identity",
                                 version="identity")


# --- graphrun ------------------------------------------------------------------------------


class FrameSource(Agent):
    """Numbered frames as a camera sends them, at ``rate`` (0: as the window allows)."""

    frames = Output(Frame)

    class Params(BaseModel):
        board: str
        rate: float = 0.0
        window: int = 32

    def start(self) -> None:
        self._board = Board(self.params.board)
        self._frames = frames()
        self._pace = Pacer(self.params.rate or None)
        self._seq = 0

    def produce(self) -> None:
        if not self._board.room(self._seq, self.params.window):
            self.wait(POLL)
            return
        if self._pace.wait(self.wait):
            image = self._frames[self._seq % len(self._frames)]
            self.frames.send({"image": image, "camera": "front", "part_id": self._seq, "frame": self._seq,
                              "timestamp": time.time(), "pixel_format": "Mono8", "width": WIDTH, "height": HEIGHT})
            self._seq += 1


class VerdictSink(Agent):
    verdicts = Input(Verdict)

    class Params(BaseModel):
        board: str

    def start(self) -> None:
        self._board = Board(self.params.board)

    def handle(self, msg: Message) -> None:
        self._board.took(msg["part_id"], msg.received - msg.created)  # type: ignore[operator]


GRAPH = """\
name: bench-pipeline
redis: {{main: {{persistence: none{store}}}}}
agents:
  source:
    type: pipeline:FrameSource
    params: {{board: "{board}", rate: {rate}, window: {window}}}
    outputs: {{frames: {{stream: {frames}, maxlen: {maxlen}}}}}
  classifier:
    type: classification
    replicas: {replicas}
    params: {{backend: onnxruntime, model_updates: false, batch: {{max_size: {batch}}}{model}}}
    inputs: {{frames: source.frames}}
    outputs: {{verdicts: {{stream: {verdicts}, maxlen: 100000}}}}
  sink:
    type: pipeline:VerdictSink
    params: {{board: "{board}"}}
    inputs: {{verdicts: classifier.verdicts}}
"""


def graphrun_graph(board: Board, *, rate: float, window: int, replicas: int = 1, batch: int = 1,
                   model: str | None = None, frames: bool = False) -> Graph:
    return parse_graph(GRAPH.format(board=board.path, rate=rate, window=window, replicas=replicas, batch=batch,
                                    frames=FRAMES_STREAM, verdicts=VERDICTS_STREAM, maxlen=MAXLEN,
                                    model=f", model: {model}" if model else "",
                                    store=frame_store_setting(WIDTH * HEIGHT) if frames else ""))


# --- redis-py by hand ------------------------------------------------------------------------


def raw_source(server: RedisServer, board_path: str, rate: float, window: int) -> None:
    client, board, images = raw_client("tuned", server), Board(board_path), frames()
    pace, seq = Pacer(rate or None), 0
    while not board.stopped:
        if not board.room(seq, window):
            time.sleep(POLL)
            continue
        pace.wait(lambda s: (time.sleep(s), False)[1])
        image = images[seq % len(images)]
        client.xadd(FRAMES_STREAM, {"seq": seq, "t": repr(time.time()), "image": memoryview(image.reshape(-1))},
                    maxlen=MAXLEN, approximate=True)
        seq += 1


def raw_classifier(server: RedisServer, board_path: str, identity: bool = False) -> None:
    client, board, model = raw_client("tuned", server), Board(board_path), SameModel(identity=identity)
    while not board.stopped:
        reply = client.xreadgroup("classifier", "c1", {FRAMES_STREAM: ">"}, count=1, block=100)
        for entry_id, fields in reply[0][1] if reply else []:
            image = np.frombuffer(fields[b"image"], np.uint8).reshape(HEIGHT, WIDTH)
            score = model(image)
            client.xadd(VERDICTS_STREAM, {"seq": fields[b"seq"], "t": fields[b"t"], "score": repr(score)})
            client.xack(FRAMES_STREAM, "classifier", entry_id)


def raw_sink(server: RedisServer, board_path: str) -> None:
    client, board = raw_client("tuned", server), Board(board_path)
    while not board.stopped:
        reply = client.xreadgroup("sink", "c1", {VERDICTS_STREAM: ">"}, count=1, block=100)
        for entry_id, fields in reply[0][1] if reply else []:
            now = time.time()
            client.xack(VERDICTS_STREAM, "sink", entry_id)
            board.took(int(fields[b"seq"]), now - float(fields[b"t"]))


def raw_groups(client: Any) -> None:
    for stream, group in ((FRAMES_STREAM, "classifier"), (VERDICTS_STREAM, "sink")):
        client.xgroup_create(stream, group, id="0", mkstream=True)


# --- dora-rs ----------------------------------------------------------------------------------


def dora_available() -> str | None:
    """Why dora-rs cannot run here, or None when it can."""
    if shutil.which("dora") is None:
        return "the dora command is not installed (pip install dora-rs dora-rs-cli)"
    try:
        import dora  # noqa: F401
        import pyarrow  # noqa: F401
    except ImportError as exc:
        return f"{exc.name} is not installed (pip install dora-rs pyarrow)"
    return None


def dora_dataflow(folder: Path, board: Board, *, rate: float, window: int, queue: int | None,
                  identity: bool = False) -> Path:
    """A dataflow file of the three nodes; ``queue``: the classifier's and sink's input queue size."""
    env = {"BENCH_BOARD": board.path, "BENCH_RATE": str(rate), "BENCH_WINDOW": str(window),
           "BENCH_IDENTITY": "1" if identity else "0", "PYTHONPATH": os.pathsep.join(sys.path)}

    def queued(source: str) -> Any:
        return {"source": source, "queue_size": queue} if queue else source

    flow = {"nodes": [
        {"id": "source", "path": str(DORA_NODES / "source.py"), "outputs": ["frame"], "env": env},
        {"id": "classifier", "path": str(DORA_NODES / "classifier.py"), "inputs": {"frame": queued("source/frame")},
         "outputs": ["verdict"], "env": env},
        {"id": "sink", "path": str(DORA_NODES / "sink.py"), "inputs": {"verdict": queued("classifier/verdict")},
         "env": env},
    ]}
    path = folder / "dataflow.yml"
    path.write_text(json.dumps(flow, indent=1))  # JSON is YAML
    return path


def dora_run(dataflow: Path, seconds: float) -> subprocess.Popen[bytes]:
    return subprocess.Popen(["dora", "run", str(dataflow), "--stop-after", f"{int(seconds * 1000)}ms"],
                            cwd=dataflow.parent, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
