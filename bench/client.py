"""Request/response benchmark: the fraud-detection setup through graphrun's request path.

    python bench/client.py                          # 3 s per row, 1 and 16 clients
    python bench/client.py --rounds 3 --seconds 3   # each row 3 times, setups taking turns: medians
    python bench/client.py --seconds 5 --redisai redis://host:6379 --json out.json

The RedisAI benchmark's fraud-detection scoring (bench/inference.py: a dense network over
a 1x30 transaction and a 1x256 reference tensor kept in Redis), served four ways, in
one run, each with 1 and 16 concurrent clients:

- ``graphrun-request``: ``GraphClient.request`` from client threads sharing one client:
  the transaction goes into an input stream with a correlation id and reply address,
  the scorer agent (bench/fraud_agent.py: run by graphrun's runner in its own process,
  the reference tensor read from Redis, ``handle_batch`` scoring each read in one
  inference call) answers, and the runtime routes the score to the caller's reply
  stream;
- ``graphrun-pipelined``: the same client, but one thread keeps N requests in flight
  (``submit_many`` as answers come, ``result`` in order): pipelining in the client, with
  none of the thread switches of N threads;
- ``graphrun-request-async``: the same through ``AsyncGraphClient``, the clients being
  tasks of one event loop instead of threads;
- ``http-json``: the usual baseline: a starlette app on uvicorn in its own process with
  the same model, reading the reference tensor from the same Redis, a JSON body in and
  out, clients on keep-alive connections;
- ``redisai-dag``: one AI.DAGEXECUTE per request, only with ``--redisai URL`` (RedisAI
  cannot be installed here; the run says when it was not measured).

Figures: round-trip p50 and p99 and requests per second. They depend on the machine
and its load, and client and server share its cores.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import multiprocessing
import os
import socket
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import ExitStack, asynccontextmanager
from pathlib import Path

import numpy as np
import redis

sys.path.insert(0, str(Path(__file__).parent))

from graphrun import AsyncGraphClient, GraphClient, Ticket
from graphrun.graph import Graph, parse_graph
from graphrun.redis_server import RedisServer
from graphrun.runner import AgentRunner
from graphrun_agents.classification.toy_models import fraud_model
from inference import REFERENCE_KEY, free_port, measure, redisai_call

PORT = "scorer.transactions"
GRAPH = """\
name: bench-client
redis: {{main: {{persistence: none}}}}
agents:
  scorer:
    type: fraud_agent:FraudScorer
    params: {{model: "{model}", reference_key: "{reference}"}}
    inputs: {{transactions: {{from: "main:bench.transactions", batch: {batch}}}}}
"""


def bench_graph(model: Path, batch: int) -> Graph:
    return parse_graph(GRAPH.format(model=model, reference=REFERENCE_KEY, batch=batch))


def run_scorer(model: Path, batch: int, url: str, ready: multiprocessing.Event, stop: multiprocessing.Event) -> None:  # type: ignore[valid-type]
    """The scorer agent in a process of its own, run by graphrun's runner."""
    runner = AgentRunner(bench_graph(model, batch), "scorer", replica=0, redis_urls={"main": url})
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    runner.started.wait(60)
    ready.set()
    stop.wait()
    runner.request_stop()
    thread.join(30)


def transaction() -> np.ndarray:
    return np.random.default_rng().random((1, 30), dtype=np.float32)


# --- graphrun's request path -------------------------------------------------------------


def graphrun_call(client: GraphClient) -> Callable[[], Callable[[], object]]:
    def make() -> Callable[[], object]:
        payload = {"transaction": transaction()}

        def call() -> object:
            return client.request(PORT, payload, timeout=10)["fraud"]

        return call

    return make


def measure_pipelined(client: GraphClient, window: int, seconds: float, warmup: int = 50) -> dict:
    """One thread keeping ``window`` requests in flight: as answers come, the next ones go
    out in groups (a quarter of the window at a time, one pipeline each)."""
    payload = {"transaction": transaction()}
    for _ in range(warmup):
        client.request(PORT, payload, timeout=10)
    step = max(1, window // 4)
    sent: deque[tuple[float, Ticket]] = deque()
    latencies: list[float] = []

    def refill(count: int) -> None:
        now = time.perf_counter()
        sent.extend((now, t) for t in client.submit_many(PORT, [payload] * count, timeout=10))

    began = time.perf_counter()
    end = began + seconds
    refill(window)
    while sent:
        t0, ticket = sent.popleft()
        client.result(ticket)
        latencies.append(time.perf_counter() - t0)
        if len(sent) <= window - step and time.perf_counter() < end:
            refill(window - len(sent))
    elapsed = time.perf_counter() - began
    ms = np.array(latencies) * 1000
    return {"clients": window, "requests": int(ms.size), "throughput_per_s": round(ms.size / elapsed, 1),
            "p50_ms": round(float(np.percentile(ms, 50)), 3), "p99_ms": round(float(np.percentile(ms, 99)), 3)}


def measure_async(url: str, clients: int, seconds: float, warmup: int = 50) -> dict:
    """``clients`` tasks of one event loop, each awaiting one request after another."""

    async def main() -> list[float]:
        async with AsyncGraphClient(url, name="bench-async") as client:
            latencies: list[float] = []
            payload = {"transaction": transaction()}

            async def one() -> float:
                t0 = time.perf_counter()
                await client.request("bench.transactions", payload, timeout=10, answer="scorer.scores")
                return time.perf_counter() - t0

            for _ in range(warmup):
                await one()
            end = time.perf_counter() + seconds

            async def worker() -> None:
                while time.perf_counter() < end:
                    latencies.append(await one())

            began = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(clients)))
            latencies.append(-(time.perf_counter() - began))  # the elapsed time, last
            return latencies

    every = asyncio.run(main())
    elapsed = -every.pop()
    ms = np.array(every) * 1000
    return {"clients": clients, "requests": int(ms.size), "throughput_per_s": round(ms.size / elapsed, 1),
            "p50_ms": round(float(np.percentile(ms, 50)), 3), "p99_ms": round(float(np.percentile(ms, 99)), 3)}


# --- the HTTP/JSON baseline -----------------------------------------------------------------


def serve_http_json(model: Path, url: str, port: int, ready: multiprocessing.Event) -> None:  # type: ignore[valid-type]
    """starlette on uvicorn: JSON {"transaction": [30 floats]} in, {"fraud": p} out."""
    import onnxruntime as ort
    import redis.asyncio
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(model.read_bytes(), options, providers=["CPUExecutionProvider"])
    store = redis.asyncio.Redis.from_url(url)

    async def score(request: Request) -> JSONResponse:
        body = await request.json()
        reference = np.frombuffer(await store.get(REFERENCE_KEY), np.float32).reshape(1, 256)
        tx = np.asarray(body["transaction"], np.float32).reshape(1, 30)
        out = session.run(None, {"transaction": tx, "reference": reference})[0]
        return JSONResponse({"fraud": float(out[0, 1])})

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        ready.set()
        yield

    app = Starlette(routes=[Route("/score", score, methods=["POST"])], lifespan=lifespan)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def http_json_call(port: int) -> Callable[[], Callable[[], object]]:
    def make() -> Callable[[], object]:
        conn = http.client.HTTPConnection("127.0.0.1", port)
        body = json.dumps({"transaction": transaction().ravel().tolist()})

        def call() -> object:
            conn.request("POST", "/score", body=body, headers={"content-type": "application/json"})
            return json.loads(conn.getresponse().read())["fraud"]

        return call

    return make


def listening(port: int, timeout: float) -> bool:
    """Whether the server takes connections within ``timeout`` (its lifespan starts before it listens)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


# --- running it all ---------------------------------------------------------------------------


def report(rows: list[dict]) -> None:
    print("\n| setup | clients | requests/s | p50 ms | p99 ms | rounds (medians) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['setup']} | {r['clients']} | {r['throughput_per_s']:,.0f} | {r['p50_ms']:.3f} | {r['p99_ms']:.3f} "
              f"| {r['rounds']} |")
    by = {(r["setup"], r["clients"]): r["throughput_per_s"] for r in rows}
    http16 = by.get(("http-json", 16))
    best = max((v for (s, c), v in by.items() if s.startswith("graphrun") and c == 16), default=None)
    if http16 and best:
        print(f"\ngraphrun at 16 clients (best of its rows): {best / http16:.1f}x HTTP/JSON's requests/s")
    ai = by.get(("redisai-dag", 16))
    print(f"RedisAI DAGEXECUTE at 16 clients: {ai:,.0f} requests/s" if ai else
          "RedisAI DAGEXECUTE: not measured (give --redisai URL of a Redis with the RedisAI module)")
    print(f"{os.cpu_count()} cores; client and server share them")


def median_rows(rows: list[dict]) -> list[dict]:
    """One row per setup and client count: the median of its rounds' figures."""
    grouped: dict[tuple[str, int], list[dict]] = {}
    for r in rows:
        grouped.setdefault((r["setup"], r["clients"]), []).append(r)
    return [{"setup": setup, "clients": clients, "rounds": len(rs),
             **{k: round(float(np.median([r[k] for r in rs])), 3) for k in ("throughput_per_s", "p50_ms", "p99_ms")}}
            for (setup, clients), rs in grouped.items()]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=3.0, help="measuring time per row")
    parser.add_argument("--rounds", type=int, default=1,
                        help="measure every row this many times, the setups taking turns; report medians")
    parser.add_argument("--clients", default="1,16", help="comma-separated numbers of concurrent clients")
    parser.add_argument("--batch", type=int, default=64, help="most requests the scorer takes per read")
    parser.add_argument("--redisai", help="URL of a Redis with the RedisAI module")
    parser.add_argument("--only", help="comma-separated setups to run (graphrun-request, graphrun-pipelined, "
                                       "graphrun-request-async, http-json, redisai-dag)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    counts = [int(c) for c in args.clients.split(",")]
    only = set(args.only.split(",")) if args.only else None
    spawn = multiprocessing.get_context("spawn")
    rows: list[dict] = []
    with ExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory())
        server = stack.enter_context(RedisServer(name="bench", persistence="none"))
        model = Path(tmp) / "fraud.onnx"
        model.write_bytes(fraud_model())
        redis.Redis.from_url(server.url).set(REFERENCE_KEY, np.random.default_rng(1).random((1, 256), np.float32).tobytes())
        url = server.unix_url
        setups: list[tuple[str, Callable[[int], dict]]] = []

        def wanted(name: str) -> bool:
            return only is None or name in only

        if any(wanted(name) for name in ("graphrun-request", "graphrun-pipelined", "graphrun-request-async")):
            ready, stop = spawn.Event(), spawn.Event()
            scorer = spawn.Process(target=run_scorer, args=(model, args.batch, url, ready, stop), daemon=True)
            scorer.start()
            stack.callback(scorer.join, 30)
            stack.callback(stop.set)
            if not ready.wait(60):
                raise RuntimeError("the scorer agent did not start")
            client = GraphClient(bench_graph(model, args.batch), redis_urls={"main": url}, name="bench")
            stack.callback(client.close)
            if wanted("graphrun-request"):
                setups.append(("graphrun-request", lambda n: measure(graphrun_call(client), n, args.seconds)))
            if wanted("graphrun-pipelined"):
                setups.append(("graphrun-pipelined", lambda n: measure_pipelined(client, n, args.seconds)))
            if wanted("graphrun-request-async"):
                setups.append(("graphrun-request-async", lambda n: measure_async(url, n, args.seconds)))
        if wanted("http-json"):
            port, ready = free_port(), spawn.Event()
            http_server = spawn.Process(target=serve_http_json, args=(model, url, port, ready), daemon=True)
            http_server.start()
            stack.callback(http_server.join, 10)
            stack.callback(http_server.terminate)
            if not ready.wait(60) or not listening(port, 30):
                raise RuntimeError("the HTTP/JSON server did not start")
            setups.append(("http-json", lambda n: measure(http_json_call(port), n, args.seconds)))
        if args.redisai and wanted("redisai-dag"):
            make = redisai_call(fraud_model(), args.redisai)
            setups.append(("redisai-dag", lambda n: measure(make, n, args.seconds)))
        for _ in range(args.rounds):  # taking turns: a busy spell of the machine hits every setup alike
            for name, run in setups:
                for n in counts:
                    rows.append({"setup": name, **run(n)})
                    print(rows[-1], flush=True)
    report(median_rows(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
