"""The operator at the HMI: acknowledging rejects, resetting the shift, the reject-rate
alarm, pushed updates, and the operator token.

Actions go over real HTTP to the agent's own server; in a graph, the agent runs in a
real runner on a real redis-server and its ``operator_events`` are read from the stream.
"""

from __future__ import annotations

import base64
import json
import socket
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from conftest import read_messages, wait_until, write_messages
from graphrun import AgentStartError, load_graph
from graphrun.cli import main
from graphrun.graph import parse_graph
from graphrun.runner import AgentRunner
from graphrun.testing import AgentHarness
from graphrun_agents.hmi.agent import HmiAgent
from graphrun_agents.hmi.state import LiveState
from test_hmi import TWO_CAMERAS, camera, frame_payload, get, open_and_drop, state, threads_since, verdict_payload

TOKEN = "s3cret-operator-token"


def post(port: int, path: str, body: Any = None, *, token: str | None = TOKEN, headers: dict[str, str] | None = None,
         data: bytes | None = None) -> tuple[int, dict[str, Any]]:
    """POSTs JSON with the token as a bearer token; (status, the JSON answer)."""
    sent = {"Content-Type": "application/json", **(headers or {})}
    if token is not None:
        sent["Authorization"] = f"Bearer {token}"
    payload = data if data is not None else json.dumps(body if body is not None else {}).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=payload, headers=sent, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        body = exc.read()
        return exc.code, json.loads(body) if exc.headers["Content-Type"] == "application/json" else {"text": body}


@pytest.fixture
def operator_token(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("GRAPHRUN_OPERATOR_TOKEN", TOKEN)
    monkeypatch.delenv("GRAPHRUN_OPERATOR_TOKEN_FILE", raising=False)
    return TOKEN


@pytest.fixture
def no_operator_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GRAPHRUN_OPERATOR_TOKEN", raising=False)
    monkeypatch.delenv("GRAPHRUN_OPERATOR_TOKEN_FILE", raising=False)


@contextmanager
def ticking(harness: AgentHarness) -> Iterator[AgentHarness]:
    """The harness's agent ticks in the background, as its runner would: operator events get sent."""
    stop = threading.Event()
    ticker = threading.Thread(target=lambda: [harness.tick() for _ in iter(lambda: stop.wait(0.05), True)],
                              name="ticker", daemon=True)
    ticker.start()
    try:
        yield harness
    finally:
        stop.set()
        ticker.join()


@pytest.fixture
def hmi(operator_token: str) -> Iterator[AgentHarness]:
    """A ticking HMI with part 42 rejected."""
    with AgentHarness(HmiAgent, name="hmi", params={"port": 0, "reason_codes": ["R1-scratch", "R2-false-call"]},
                      groups=TWO_CAMERAS) as h:
        h.send("cls_front", verdict_payload("cam_front", 41))
        h.send("cls_front", verdict_payload("cam_front", 42, "scratch", 0.93))
        with ticking(h):
            yield h


def port_of(harness: AgentHarness) -> int:
    return harness.agent.server.port


# --- acknowledging and resetting ------------------------------------------------------------


def test_acknowledging_a_reject_sends_an_event_with_the_reason_and_marks_it_on_the_page(hmi: AgentHarness) -> None:
    status, event = post(port_of(hmi), "/api/ack", {"part_id": 42, "reason": "R2-false-call"})

    assert status == 200
    assert (event["event"], event["part_id"], event["label"], event["reason"], event["hmi"]) == (
        "acknowledged", 42, "scratch", "R2-false-call", "hmi")
    assert hmi.take("operator_events") == [event]
    [reject] = state(port_of(hmi))["rejects"]
    assert reject["part_id"] == 42 and reject["acknowledged"]["reason"] == "R2-false-call"
    assert state(port_of(hmi))["unacknowledged"] == 0


def test_a_reason_is_optional(hmi: AgentHarness) -> None:
    status, event = post(port_of(hmi), "/api/ack", {"part_id": 42})

    assert status == 200 and event["reason"] is None


@pytest.mark.parametrize(("body", "status", "says"), [
    ({"part_id": 41}, 409, "part 41 is not a reject"),
    ({"part_id": 7}, 404, "part 7 is not among the last"),
    ({"part_id": 42, "reason": "R9-unknown"}, 400, "not one of the reason codes"),
    ({"part_id": "42"}, 400, "part_id"),
    ({"part_id": 42, "who": "me"}, 400, "who"),
    ({"reason": "R1-scratch"}, 400, "part_id"),
])
def test_an_acknowledgement_that_cannot_be_done_is_refused_saying_why(
    hmi: AgentHarness, body: dict[str, Any], status: int, says: str
) -> None:
    answer_status, answer = post(port_of(hmi), "/api/ack", body)

    assert answer_status == status and says in answer["error"]
    assert hmi.take("operator_events") == []


def test_a_reject_is_acknowledged_once(hmi: AgentHarness) -> None:
    assert post(port_of(hmi), "/api/ack", {"part_id": 42})[0] == 200
    status, answer = post(port_of(hmi), "/api/ack", {"part_id": 42, "reason": "R1-scratch"})

    assert status == 409 and "acknowledged already" in answer["error"]
    assert len(hmi.take("operator_events")) == 1


def test_resetting_zeroes_the_shifts_counters_and_the_event_keeps_the_shift_that_ended(hmi: AgentHarness) -> None:
    port = port_of(hmi)
    started = state(port)["counters"]["shift_started"]

    status, event = post(port, "/api/reset")

    assert status == 200 and event["event"] == "counters_reset"
    assert (event["shift"]["parts"], event["shift"]["rejects"], event["shift"]["started"]) == (2, 1, started)
    counters = state(port)["counters"]
    assert (counters["parts"], counters["rejects"]) == (0, 0) and counters["shift_started"] == event["shift"]["ended"]
    hmi.send("cls_front", verdict_payload("cam_front", 42, "scratch", 0.93))  # a redelivered verdict: no new part
    hmi.send("cls_front", verdict_payload("cam_front", 43))
    assert (state(port)["counters"]["parts"], state(port)["counters"]["rejects"]) == (1, 0)


def test_a_reset_takes_no_fields(hmi: AgentHarness) -> None:
    status, answer = post(port_of(hmi), "/api/reset", {"parts": 5})

    assert status == 400 and "parts" in answer["error"]
    assert state(port_of(hmi))["counters"]["parts"] == 2


# --- the token ---------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/api/ack", "/api/reset", "/api/session"])
@pytest.mark.parametrize("token", [None, "wrong-token", ""])
def test_without_the_token_acknowledging_and_resetting_are_refused(hmi: AgentHarness, path: str,
                                                                   token: str | None) -> None:
    status, answer = post(port_of(hmi), path, {"part_id": 42} if path == "/api/ack" else {}, token=token)

    assert status == 401 and "token" in answer["error"]
    assert hmi.take("operator_events") == []
    snapshot = state(port_of(hmi))
    assert snapshot["counters"]["parts"] == 2 and snapshot["rejects"][0]["acknowledged"] is None


def test_the_token_may_come_as_the_password_of_basic_authentication(hmi: AgentHarness) -> None:
    basic = "Basic " + base64.b64encode(f"operator:{TOKEN}".encode()).decode()

    status, answer = post(port_of(hmi), "/api/session", token=None, headers={"Authorization": basic})

    assert (status, answer) == (200, {"operator": True})


def test_with_no_token_set_acknowledging_and_resetting_are_off_and_the_view_is_open(no_operator_token: None) -> None:
    with AgentHarness(HmiAgent, params={"port": 0}, groups=TWO_CAMERAS) as h:
        h.send("cls_front", verdict_payload("cam_front", 42, "scratch", 0.93))

        for path in ("/api/ack", "/api/reset"):
            status, answer = post(port_of(h), path, {"part_id": 42} if path == "/api/ack" else {}, token="anything")
            assert status == 403 and "GRAPHRUN_OPERATOR_TOKEN" in answer["error"]
        assert get(port_of(h), "/")[0] == 200 and state(port_of(h))["counters"]["rejects"] == 1


def test_a_request_from_another_sites_page_or_not_as_json_is_refused(hmi: AgentHarness) -> None:
    port = port_of(hmi)

    assert post(port, "/api/reset", headers={"Origin": "http://evil.example"})[0] == 403
    assert post(port, "/api/reset", headers={"Content-Type": "application/x-www-form-urlencoded"}, data=b"a=1")[0] == 415
    assert post(port, "/api/reset", data=b"x" * 10_000)[0] == 413
    assert post(port, "/api/reset", data=b"{not json")[0] == 400
    assert post(port, "/api/reset", headers={"Origin": f"http://127.0.0.1:{port}"})[0] == 200


# --- where it listens (the least-privilege issue's HMI) ------------------------------------------


def test_by_default_the_hmi_listens_on_this_machine_only(no_operator_token: None) -> None:
    with AgentHarness(HmiAgent, params={"port": 0}, groups=TWO_CAMERAS) as h:
        assert h.agent.server._server.server_address[0] == "127.0.0.1"  # noqa: SLF001 (the socket itself)
        assert HmiAgent.Params().host == "127.0.0.1"


def test_on_another_address_the_hmi_does_not_start_without_the_token(no_operator_token: None) -> None:
    with pytest.raises(AgentStartError, match="0.0.0.0.*GRAPHRUN_OPERATOR_TOKEN"):
        with AgentHarness(HmiAgent, params={"host": "0.0.0.0", "port": 0}, groups=TWO_CAMERAS):
            pass


def test_on_another_address_even_the_view_needs_the_token(operator_token: str) -> None:
    with AgentHarness(HmiAgent, params={"host": "0.0.0.0", "port": 0}, groups=TWO_CAMERAS) as h:
        h.send("front", frame_payload("cam_front", 1, np.zeros((60, 80), np.uint8)))
        port = port_of(h)
        basic = {"Authorization": "Basic " + base64.b64encode(f"op:{TOKEN}".encode()).decode()}

        for path in ("/", "/api/state", "/api/events", "/frame/cam_front.jpg", "/stream/cam_front.mjpg"):
            status, headers, _ = get(port, path)
            assert status == 401 and headers["WWW-Authenticate"].startswith("Basic "), path
        request = urllib.request.Request(f"http://127.0.0.1:{port}/frame/cam_front.jpg", headers=basic)
        with urllib.request.urlopen(request, timeout=10) as answer:
            assert answer.status == 200 and answer.headers["Content-Type"] == "image/jpeg"
        wrong = {"Authorization": "Basic " + base64.b64encode(b"op:guess").decode()}
        with pytest.raises(urllib.error.HTTPError, match="401"):
            urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{port}/", headers=wrong), timeout=10)


@pytest.mark.parametrize("path", [
    "/../agents/hmi/agent.py", "/static/index.html", "/index.html/..", "/api/state/x", "/api", "/frame/",
    "/frame/../../../etc/passwd.jpg", "/%2e%2e/%2e%2e/etc/passwd", "/stream/../index.html.mjpg", "/favicon.ico",
])
def test_no_path_outside_the_page_and_its_routes_is_served(hmi: AgentHarness, path: str) -> None:
    hmi.send("front", frame_payload("cam_front", 1, np.zeros((60, 80), np.uint8)))
    with socket.create_connection(("127.0.0.1", port_of(hmi)), timeout=10) as conn:  # the path sent as it is
        conn.sendall(f"GET {path} HTTP/1.0\r\n\r\n".encode())
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk

    assert answer.startswith(b"HTTP/1.0 404"), answer[:200]
    assert b"<html" not in answer and b"import" not in answer and b"root:" not in answer


def test_other_methods_are_not_served(hmi: AgentHarness) -> None:
    for method in ("PUT", "DELETE", "PATCH"):
        request = urllib.request.Request(f"http://127.0.0.1:{port_of(hmi)}/api/reset", method=method, data=b"{}")
        with pytest.raises(urllib.error.HTTPError, match="501"):
            urllib.request.urlopen(request, timeout=10)
    assert post(port_of(hmi), "/api/state")[0] == 404


# --- pushed updates -------------------------------------------------------------------------------


def events(port: int, *, timeout: float = 10) -> Iterator[dict[str, Any]]:
    """The states pushed on /api/events, as the browser's EventSource reads them."""
    answer = urllib.request.urlopen(f"http://127.0.0.1:{port}/api/events", timeout=timeout)
    assert answer.headers["Content-Type"] == "text/event-stream" and answer.headers["Cache-Control"] == "no-store"
    assert answer.readline() == b"retry: 1000\n" and answer.readline() == b"\n"
    with answer:
        while True:
            line = answer.readline()
            assert line.startswith(b"data: "), line
            assert answer.readline() == b"\n"
            yield json.loads(line[len(b"data: "):])


def test_the_state_is_pushed_when_it_changes(hmi: AgentHarness) -> None:
    pushed = events(port_of(hmi))
    assert next(pushed)["counters"]["parts"] == 2

    hmi.send("cls_front", verdict_payload("cam_front", 43, "chip", 0.8))

    latest = next(s for s in pushed if s["counters"]["parts"] == 3)
    assert latest["rejects"][0]["part_id"] == 43 and latest["unacknowledged"] == 2
    pushed.close()


def test_a_page_that_goes_leaves_no_thread_behind(hmi: AgentHarness) -> None:
    before = set(threading.enumerate())

    for _ in range(20):
        assert open_and_drop(port_of(hmi), "/api/events", read_first=b"data: ") == 200
    assert threads_since(before), "no thread served the pages"

    wait_until(lambda: not threads_since(before), timeout=20, what="the event-stream threads to end")


# --- the reject rate over the last parts ------------------------------------------------------------


def test_the_reject_rate_is_over_the_last_n_parts_and_alarms_over_a_full_window_only() -> None:
    live = LiveState(views=1, history=10, incomplete_after=5.0, window=4, alarm=0.5)
    add = lambda part, label="ok": live.add_verdict(  # noqa: E731
        "cam", verdict_payload("cam", part, label, 0.9 if label != "ok" else 0.1), created=0.0)

    assert add(1, "crack") is None and add(2, "crack") is None  # 100 %, but two parts are no rate yet
    assert add(3) is None
    assert add(4) is True  # 2 of the last 4: the alarm
    assert live.snapshot()["window"] == {"size": 4, "parts": 4, "rejects": 2, "rate": 0.5, "alarm": 0.5,
                                         "alarming": True}
    assert add(4) is None  # a redelivered verdict changes nothing
    assert add(5) is False  # part 1 left the window: 1 of 4
    assert live.snapshot()["window"]["rate"] == 0.25
    assert live.snapshot()["counters"]["reject_rate"] == pytest.approx(2 / 5)  # the shift's, beside it


def test_a_part_rejected_by_its_second_view_counts_in_the_window() -> None:
    live = LiveState(views=2, history=10, incomplete_after=5.0, window=2, alarm=0.5)
    live.add_verdict("front", verdict_payload("front", 1), created=0.0)
    live.add_verdict("front", verdict_payload("front", 2), created=0.0)

    assert live.add_verdict("back", verdict_payload("back", 1, "pitting", 0.9), created=0.0) is True
    assert live.snapshot()["window"]["rejects"] == 1


# --- in a graph, on real Redis -------------------------------------------------------------------------

GRAPH = """
name: line
redis: {{main: {{url: {url}}}}}
agents:
  hmi:
    type: hmi
    params: {{port: 0, reject_window: 3, reject_alarm: 0.6}}
    inputs:
      verdicts: {{cls_front: "main:cls.front.verdicts"}}
    outputs:
      operator_events: "main:hmi.operator.events"
"""


@pytest.fixture
def line_hmi(redis_server: Any, start_agent: Callable[..., AgentRunner], operator_token: str) -> AgentRunner:
    runner = start_agent(parse_graph(GRAPH.format(url=redis_server.url), "line.yaml"), "hmi")
    wait_until(lambda: "url" in runner.status, what="the HMI's web server")
    return runner


def test_in_a_graph_an_acknowledgement_is_in_the_stream_when_answered_and_traced_from_the_verdict(
    line_hmi: AgentRunner, redis_client: Any
) -> None:
    port = line_hmi.agent.server.port
    write_messages(redis_client, "cls.front.verdicts", [verdict_payload("cam_front", 9, "crack", 0.97)],
                             producer="cls_front")
    wait_until(lambda: state(port)["counters"]["rejects"] == 1, what="the reject to reach the HMI")

    status, event = post(port, "/api/ack", {"part_id": 9, "reason": "R7"})

    assert status == 200
    [written] = read_messages(redis_client, "hmi.operator.events")  # written before the answer came
    [verdict] = [m for m in read_messages(redis_client, "cls.front.verdicts")]
    assert written.payload == event and written.producer == "hmi"
    assert written.created == verdict.created  # one chain: the part's origin
    assert [h.agent for h in written.hops][-1] == "hmi"


def test_in_a_graph_the_reject_rate_alarm_is_an_event_traced_from_the_verdict_that_raised_it(
    line_hmi: AgentRunner, redis_client: Any
) -> None:
    port = line_hmi.agent.server.port
    labels = ["crack", "chip", "ok", "ok", "ok"]
    write_messages(redis_client, "cls.front.verdicts",
                   [verdict_payload("cam_front", p, label, 0.9 if label != "ok" else 0.1)
                    for p, label in enumerate(labels, start=1)], producer="cls_front")

    wait_until(lambda: len(read_messages(redis_client, "hmi.operator.events")) == 2, what="the alarm and its end")
    raised, cleared = read_messages(redis_client, "hmi.operator.events")
    assert raised["event"] == "reject_rate_alarm" and raised["window"]["rejects"] == 2
    assert cleared["event"] == "reject_rate_normal" and cleared["window"]["rejects"] == 1
    assert state(port)["window"]["alarming"] is False
    assert camera(state(port), "cam_front")["verdicts"] == 5


def test_graphrun_trace_shows_the_acknowledgement_in_the_parts_chain(
    redis_server: Any, redis_client: Any, start_agent: Callable[..., AgentRunner], operator_token: str,
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "line.yaml"
    path.write_text(GRAPH.format(url=redis_server.url))
    runner = start_agent(load_graph(path), "hmi")
    wait_until(lambda: "url" in runner.status, what="the HMI's web server")
    write_messages(redis_client, "cls.front.verdicts", [verdict_payload("cam_front", 12, "chip", 0.9)],
                   producer="cls_front")
    wait_until(lambda: state(runner.agent.server.port)["counters"]["rejects"] == 1, what="the reject")
    assert post(runner.agent.server.port, "/api/ack", {"part_id": 12, "reason": "R3"})[0] == 200
    capsys.readouterr()

    assert main(["trace", str(path), "12", "--json"]) == 0

    [event] = [t for t in json.loads(capsys.readouterr().out) if t["writer"] == "hmi.operator_events"]
    assert event["payload"]["event"] == "acknowledged" and event["payload"]["reason"] == "R3"
    assert [step["agent"] for step in event["path"]] == ["hmi"]
