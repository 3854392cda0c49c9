"""The HTTP gateway agent: POST /v1/<agent>/<port> into a running graph, over real HTTP and Redis."""

from __future__ import annotations

import http.client
import json

import cv2
import numpy as np
import pytest
from conftest import wait_until
from graphrun import AgentStartError
from graphrun.runner import AgentRunner

GRAPH = """\
name: gate
redis: {{main: {{url: "{url}"}}}}
agents:
  first:
    type: examples.doubler
    inputs: {{numbers: {{from: "main:gate.numbers"}}}}
  sizes:
    type: request_agents:ImageSize
    inputs: {{images: {{from: "main:gate.images"}}}}
  words:
    type: request_agents:Chunker
    inputs: {{texts: {{from: "main:gate.texts"}}}}
  gateway:
    type: gateway
    params: {{port: 0, max_backlog: 3, ports: [first.numbers, sizes.images, words.texts, idle.numbers]}}
  idle:
    type: examples.doubler
    inputs: {{numbers: {{from: "main:gate.idle"}}}}
"""
TOKEN = "s3cret-operator-token"


@pytest.fixture
def gate(graph_file, redis_server, start_agent, monkeypatch):
    monkeypatch.setenv("GRAPHRUN_OPERATOR_TOKEN", TOKEN)
    graph = graph_file(GRAPH.format(url=redis_server.url))
    runners = [start_agent(graph, name) for name in ("first", "sizes", "words", "gateway")]  # not "idle"
    for runner in runners:
        wait_until(runner.started.is_set, what="agents started")
    return runners[-1].agent.port_number


def post(port: int, path: str, body: bytes, content_type: str, token: str | None = TOKEN) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    headers = {"Content-Type": content_type, **({"Authorization": f"Bearer {token}"} if token else {})}
    conn.request("POST", path, body=body, headers=headers)
    response = conn.getresponse()
    return response.status, response.read()


def test_a_json_request_is_answered_with_the_graphs_reply(gate):
    status, body = post(gate, "/v1/first/numbers", json.dumps({"value": 21, "seq": 4}).encode(), "application/json")
    assert (status, json.loads(body)) == (200, {"value": 42, "seq": 4})


def test_an_image_request_becomes_a_frame_like_payload_with_the_query_fields(gate):
    image = np.zeros((48, 64, 3), np.uint8)
    _, png = cv2.imencode(".png", image)
    status, body = post(gate, "/v1/sizes/images?part_id=7&camera=front", png.tobytes(), "image/png")
    answer = json.loads(body)
    assert status == 200, answer
    assert answer["shape"] == [48, 64, 3] and answer["dtype"] == "uint8"
    assert (answer["part_id"], answer["camera"], answer["pixel_format"], answer["width"]) == (7, "front", "BGR8", 64)


def test_a_streamed_answer_comes_as_json_lines_in_order(gate):
    status, body = post(gate, "/v1/words/texts?stream=1", json.dumps({"text": "one two three"}).encode(),
                        "application/json")
    assert status == 200
    assert [json.loads(line)["word"] for line in body.splitlines()] == ["one", "two", "three"]


def test_without_the_operator_token_a_request_is_refused(gate):
    body = json.dumps({"value": 1, "seq": 0}).encode()
    assert post(gate, "/v1/first/numbers", body, "application/json", token=None)[0] == 401
    assert post(gate, "/v1/first/numbers", body, "application/json", token="wrong")[0] == 401


def test_no_answer_in_time_is_504_and_a_full_backlog_is_503(gate):
    body = json.dumps({"value": 1, "seq": 0}).encode()
    status, text = post(gate, "/v1/idle/numbers?timeout=0.3", body, "application/json")  # nobody reads it
    assert status == 504 and b"no answer" in text
    for _ in range(3):  # left waiting: the agent never runs (and these are not taken back: no timeout yet)
        conn = http.client.HTTPConnection("127.0.0.1", gate, timeout=60)
        conn.request("POST", "/v1/idle/numbers?timeout=30", body=body,
                     headers={"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"})
    wait_until(lambda: json.loads(_get(gate, "/v1/idle/numbers/backlog"))["backlog"] == 3, what="three waiting")
    status, text = post(gate, "/v1/idle/numbers", body, "application/json")
    assert status == 503 and b"limit is 3" in text


def _get(port: int, path: str) -> bytes:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request("GET", path, headers={"Authorization": f"Bearer {TOKEN}"})
    return conn.getresponse().read()


def test_bad_bodies_and_unknown_ports_are_named(gate):
    status, text = post(gate, "/v1/sizes/images", b"not an image", "image/png")
    assert status == 400 and b"the request body is not an image" in text
    status, text = post(gate, "/v1/first/numbers", b"[1, 2]", "application/json")
    assert status == 400 and b"JSON object" in text
    status, text = post(gate, "/v1/first/nmbers", b"{}", "application/json")
    assert status == 404 and b"first.numbers" in text


def test_a_gateway_beyond_this_machine_without_a_token_does_not_start(graph_file, redis_server, monkeypatch):
    monkeypatch.delenv("GRAPHRUN_OPERATOR_TOKEN", raising=False)
    monkeypatch.delenv("GRAPHRUN_OPERATOR_TOKEN_FILE", raising=False)
    graph = graph_file(GRAPH.replace("port: 0,", "host: 0.0.0.0, port: 0,").format(url=redis_server.url))
    runner = AgentRunner(graph, "gateway", replica=0, redis_urls={"main": redis_server.url})
    with pytest.raises(AgentStartError, match="no operator token"):
        runner.run(5)


def test_two_gateway_replicas_on_one_machine_share_its_port(graph_file, redis_server, start_agent, monkeypatch):
    monkeypatch.setenv("GRAPHRUN_OPERATOR_TOKEN", TOKEN)
    graph = graph_file(GRAPH.replace("port: 0,", "port: {port},").format(url=redis_server.url, port=_free_port()))
    first = start_agent(graph, "first")
    replicas = [start_agent(graph, "gateway", replica=i) for i in (0, 1)]
    for runner in (first, *replicas):
        wait_until(runner.started.is_set, what="agents started")
    port = replicas[0].agent.port_number
    assert replicas[1].agent.port_number == port
    body = json.dumps({"value": 2, "seq": 0}).encode()
    answers = [post(port, "/v1/first/numbers", body, "application/json") for _ in range(10)]
    assert answers == [(200, b'{"value":4,"seq":0}')] * 10


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_port_in_params_that_takes_no_requests_is_named_with_its_line(graph_file, redis_server, monkeypatch):
    monkeypatch.setenv("GRAPHRUN_OPERATOR_TOKEN", TOKEN)
    graph = graph_file(GRAPH.replace("words.texts, idle.numbers", "words.txt").format(url=redis_server.url))
    runner = AgentRunner(graph, "gateway", replica=0, redis_urls={"main": redis_server.url})
    where = r"graph\.yaml:15:\d+: .*no input 'txt'.*its inputs: words\.texts \(agents\.gateway\.params\.ports\[2\]\)"
    with pytest.raises(AgentStartError, match=where):
        runner.run(5)
