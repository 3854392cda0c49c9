"""Inference benchmark: the RedisAI paper's fraud-detection setup, and our own frames.

    python bench/inference.py                      # everything that can run here
    python bench/inference.py --redisai redis://host:6379   # adds the RedisAI DAG rows
    python bench/inference.py --only frames --json out.json

Fraud detection (as in the RedisAI benchmark): a dense network over a 1x30
transaction tensor and a 1x256 reference-data tensor, output 1x2. Three ways to serve
one scoring request, each measured with 1 and 16 concurrent clients:

- ``onnxruntime+redis``: the agent's way: fetch the reference tensor from Redis
  (one GET), run the model in-process with ONNX Runtime;
- ``redisai-dag``: one AI.DAGEXECUTE with the reference tensor already in Redis (LOAD);
  only with ``--redisai`` (RedisAI cannot be installed here);
- ``http-model-server``: fetch the reference tensor from Redis, POST both tensors to a
  small ASGI app (uvicorn, same ONNX model) in another process: the usual
  "model server beside the data store" design.

Frames: per-frame pre-processing and inference of the shipped defect model on
1280x1024 synthetic frames, batch 1 and batch 8.

Clients are Python threads; with 16 of them the client side shares one interpreter,
as an agent's worker threads would. Figures depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import http.client
import importlib.util
import json
import multiprocessing
import os
import socket
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort
import redis

from graphrun.redis_server import RedisServer
from graphrun_agents.classification.model import DEFAULT_MODEL, inspect, spec_for
from graphrun_agents.classification.preprocess import Preprocessor
from graphrun_agents.classification.redisai import dag_command, parse_dag_reply, store_model, tensorset_args
from graphrun_agents.classification.toy_models import fraud_model

REFERENCE_KEY = "bench:fraud:reference"


# --- measuring --------------------------------------------------------------------------


def measure(make_call: Callable[[], Callable[[], object]], clients: int, seconds: float, warmup: int = 50) -> dict:
    """Runs ``clients`` threads, each calling its own ``make_call()`` for ``seconds``."""
    latencies: list[list[float]] = [[] for _ in range(clients)]
    start = threading.Barrier(clients + 1)
    stop_at = [0.0]

    def worker(i: int) -> None:
        call = make_call()
        for _ in range(warmup):
            call()
        start.wait()
        out = latencies[i]
        while True:
            t0 = time.perf_counter()
            call()
            t1 = time.perf_counter()
            out.append(t1 - t0)
            if t1 >= stop_at[0]:
                break

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    stop_at[0] = time.perf_counter() + 3600
    start.wait()
    began = time.perf_counter()
    stop_at[0] = began + seconds
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - began
    every = np.array([x for per in latencies for x in per]) * 1000
    return {
        "clients": clients,
        "requests": int(every.size),
        "throughput_per_s": round(every.size / elapsed, 1),
        "p50_ms": round(float(np.percentile(every, 50)), 3),
        "p99_ms": round(float(np.percentile(every, 99)), 3),
    }


# --- fraud detection ------------------------------------------------------------------------


def onnx_call(model: bytes, url: str) -> Callable[[], Callable[[], object]]:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])  # shared: run() is thread-safe

    def make() -> Callable[[], object]:
        client = redis.Redis.from_url(url)
        transaction = np.random.default_rng().random((1, 30), dtype=np.float32)

        def call() -> object:
            reference = np.frombuffer(client.get(REFERENCE_KEY), np.float32).reshape(1, 256)
            return session.run(None, {"transaction": transaction, "reference": reference})[0]

        return call

    return make


def redisai_call(model: bytes, url: str) -> Callable[[], Callable[[], object]]:
    setup = redis.Redis.from_url(url)
    store_model(setup, "bench:fraud:model", model)
    setup.execute_command(*tensorset_args(REFERENCE_KEY + ":ai", np.random.default_rng(1).random((1, 256), dtype=np.float32)))

    def make() -> Callable[[], object]:
        client = redis.Redis.from_url(url)
        transaction = np.random.default_rng().random((1, 30), dtype=np.float32)
        command = dag_command("bench:fraud:model", {"transaction": transaction}, ["transaction", REFERENCE_KEY + ":ai"],
                              1, load=[REFERENCE_KEY + ":ai"])

        def call() -> object:
            return parse_dag_reply(client.execute_command(*command))

        return call

    return make


def _serve_http(model: bytes, port: int, ready: multiprocessing.Event) -> None:  # type: ignore[valid-type]
    """A minimal ASGI model server: POST raw float32 [transaction(30) | reference(256)] -> 2 float32."""
    import uvicorn

    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])

    async def app(scope, receive, send):  # noqa: ANN001 - the ASGI signature
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    ready.set()
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        x = np.frombuffer(body, np.float32)
        out = session.run(None, {"transaction": x[:30].reshape(1, 30), "reference": x[30:].reshape(1, 256)})[0]
        payload = out.astype(np.float32).tobytes()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/octet-stream"), (b"content-length", str(len(payload)).encode())]})
        await send({"type": "http.response.body", "body": payload})

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")


def http_call(url: str, port: int) -> Callable[[], Callable[[], object]]:
    def make() -> Callable[[], object]:
        client = redis.Redis.from_url(url)
        conn = http.client.HTTPConnection("127.0.0.1", port)
        transaction = np.random.default_rng().random((1, 30), dtype=np.float32).tobytes()

        def call() -> object:
            body = transaction + client.get(REFERENCE_KEY)
            conn.request("POST", "/score", body=body, headers={"content-type": "application/octet-stream"})
            return np.frombuffer(conn.getresponse().read(), np.float32)

        return call

    return make


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bench_fraud(args: argparse.Namespace) -> list[dict]:
    model = fraud_model()
    rows = []
    with RedisServer(name="bench", persistence="none") as server:
        url = server.unix_url if args.unix else server.url
        redis.Redis.from_url(url).set(REFERENCE_KEY, np.random.default_rng(1).random((1, 256), dtype=np.float32).tobytes())
        setups: list[tuple[str, Callable[[], Callable[[], object]]]] = [("onnxruntime+redis", onnx_call(model, url))]
        if args.redisai:
            setups.append(("redisai-dag", redisai_call(model, args.redisai)))
        server_process = None
        if importlib.util.find_spec("uvicorn") is None:
            print("http-model-server: skipped, uvicorn is not installed (pip install uvicorn)", file=sys.stderr)
        else:
            port = free_port()
            spawn = multiprocessing.get_context("spawn")
            ready = spawn.Event()
            server_process = spawn.Process(target=_serve_http, args=(model, port, ready), daemon=True)
            server_process.start()
            if not ready.wait(30):
                raise RuntimeError("the HTTP model server did not start")
            setups.append(("http-model-server", http_call(url, port)))
        try:
            for name, make in setups:
                for clients in (1, 16):
                    row = {"setup": name, **measure(make, clients, args.seconds)}
                    rows.append(row)
                    print(f"fraud {name:18s} clients {clients:2d}: {row['throughput_per_s']:9.1f} req/s  "
                          f"p50 {row['p50_ms']:7.3f} ms  p99 {row['p99_ms']:7.3f} ms", flush=True)
        finally:
            if server_process is not None:
                server_process.terminate()
                server_process.join(10)
    if not args.redisai:
        print("redisai-dag: skipped, give --redisai URL of a RedisAI-enabled Redis to measure it", file=sys.stderr)
    return rows


# --- frames ------------------------------------------------------------------------------------


def bench_frames(args: argparse.Namespace) -> list[dict]:
    from graphrun_agents.camera.synthetic import SyntheticConfig, render_part

    blob = Path(args.model).read_bytes()
    info = inspect(blob)
    preprocessor = Preprocessor(spec_for(info, {}, info.version))
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    session = ort.InferenceSession(blob, options, providers=["CPUExecutionProvider"])
    frames = [render_part(i, SyntheticConfig(view=("front", "back")[i % 2]))[0] for i in range(16)]
    rows = []
    for batch in (1, 8):
        pre, inf = [], []
        deadline = time.perf_counter() + args.seconds
        i = 0
        while time.perf_counter() < deadline or len(inf) < 5:
            chunk = [frames[(i + k) % len(frames)] for k in range(batch)]
            i += batch
            t0 = time.perf_counter()
            tensor = preprocessor.batch(chunk)
            t1 = time.perf_counter()
            session.run(None, {info.input_name: tensor})
            t2 = time.perf_counter()
            pre.append((t1 - t0) * 1000 / batch)
            inf.append((t2 - t1) * 1000 / batch)
        row = {
            "setup": f"frames 1280x1024 -> {info.input_shape[3]}x{info.input_shape[2]}",
            "batch": batch,
            "batches": len(inf),
            "preprocess_ms_per_frame": round(statistics.median(pre), 3),
            "inference_ms_per_frame": round(statistics.median(inf), 3),
            "frames_per_s": round(1000 / (statistics.median(pre) + statistics.median(inf)), 1),
        }
        rows.append(row)
        print(f"frames batch {batch}: pre-processing {row['preprocess_ms_per_frame']:.3f} ms/frame, inference "
              f"{row['inference_ms_per_frame']:.3f} ms/frame ({row['frames_per_s']} frames/s, median of {len(inf)})",
              flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=["fraud", "frames"], help="run one part")
    parser.add_argument("--seconds", type=float, default=3.0, help="measuring time per row")
    parser.add_argument("--redisai", help="URL of a Redis with the RedisAI module")
    parser.add_argument("--unix", action="store_true", help="reach the local Redis over its unix socket")
    parser.add_argument("--model", default=str(DEFAULT_MODEL), help="defect model for the frame rows")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="ONNX Runtime threads for frames")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    results: dict[str, list[dict]] = {}
    if args.only in (None, "fraud"):
        results["fraud"] = bench_fraud(args)
    if args.only in (None, "frames"):
        results["frames"] = bench_frames(args)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
