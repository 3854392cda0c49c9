"""The HTTP gateway under `graphrun run --secure`: its ACL user may post to the ports it
opens and read its own reply streams, and nothing more. Real launcher, redis-server with
the graph's ACL users, one process per agent, real HTTP."""

from __future__ import annotations

import http.client
import json
import threading
from collections.abc import Callable
from io import StringIO
from pathlib import Path

import pytest
import redis
from conftest import wait_until
from graphrun import ConfigError, acl
from graphrun.graph import Graph, load_graph
from graphrun.launcher import Launcher
from graphrun.redis_server import RedisServer, free_port

GRAPH = """\
name: gate
agents:
  first:
    type: examples.doubler
    inputs: {{numbers: {{from: "main:gate.numbers"}}}}
  other:
    type: examples.doubler
    inputs: {{numbers: {{from: "main:gate.other"}}}}
  gateway:
    type: gateway
    params: {{port: {port}, ports: {ports}}}
"""


def post(port: int, path: str, payload: dict) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("POST", path, body=json.dumps(payload).encode(), headers={"Content-Type": "application/json"})
    response = conn.getresponse()
    return response.status, json.loads(response.read() or b"{}")


def answered(port: int) -> bool:
    try:
        return post(port, "/v1/first/numbers", {"value": 1, "seq": 0})[0] == 200
    except OSError:
        return False


def test_under_secure_the_gateway_answers_requests_through_its_own_acl_user(tmp_path: Path) -> None:
    """The defect: the gateway's user had no right to write the input streams it targets nor
    to read its reply stream, so under --secure every request failed."""
    port = free_port()
    path = tmp_path / "gate.yaml"
    path.write_text(GRAPH.format(port=port, ports="[first.numbers]"))
    launcher = Launcher(load_graph(path), state=tmp_path / "state", secure=True, out=StringIO())
    thread = threading.Thread(target=launcher.run, kwargs={"duration": 120}, daemon=True)
    thread.start()
    try:
        wait_until(lambda: answered(port), timeout=60, what="the secured gateway answering a request")
        assert post(port, "/v1/first/numbers", {"value": 21, "seq": 7}) == (200, {"value": 42, "seq": 7})
        assert post(port, "/v1/other/numbers", {"value": 21, "seq": 8})[0] == 404  # not opened: no request made
    finally:
        launcher.request_stop()
        thread.join(60)


@pytest.fixture
def gate_graph(graph_file: Callable[[str], Graph]) -> Callable[[str], Graph]:
    return lambda ports: graph_file(GRAPH.format(port=0, ports=ports))


def test_the_gateway_user_may_post_to_its_ports_and_read_its_own_reply_streams_only(
        redis_server: RedisServer, redis_client: redis.Redis, gate_graph: Callable[[str], Graph]) -> None:
    graph = gate_graph("[first.numbers]")
    users = acl.users(graph)
    for command in acl.commands(users, "main", {u.name: "pw-" + u.role for u in users}):
        redis_client.execute_command(*command)
    gateway = redis.Redis(port=redis_server.port, username="gate-gateway", password="pw-gateway")
    entry = gateway.xadd("gate.numbers", {"h": "{}"})
    assert gateway.xlen("gate.numbers") == 1 and gateway.xrange("gate.numbers") and gateway.xdel("gate.numbers", entry)
    own, others = "graphrun:reply:gate:gateway.a1", "graphrun:reply:gate:client.b2"
    redis_client.xadd(own, {"x": "1"})
    redis_client.xadd(others, {"x": "1"})
    assert gateway.xread({own: "0-0"}) and gateway.xtrim(own, minid="0-1") == 0 and gateway.delete(own) == 1
    for forbidden in (lambda: gateway.xadd("gate.other", {"h": "{}"}),  # a port it does not open
                      lambda: gateway.xread({others: "0-0"}),  # another caller's answers
                      lambda: gateway.delete(others),
                      lambda: gateway.xreadgroup("g", "c", {"gate.numbers": ">"})):  # an agent's reading
        with pytest.raises(redis.exceptions.NoPermissionError):
            forbidden()


def test_a_gateway_open_to_every_port_may_post_to_every_input(gate_graph: Callable[[str], Graph]) -> None:
    graph = gate_graph("null")
    user = acl.agent_user(graph, graph.agents["gateway"])
    streams = {key for s in user.selectors["main"] if "xadd" in s.commands and "xdel" in s.commands for key in s.keys}
    assert streams == {"gate.numbers", "gate.other"}


def test_a_request_port_that_is_no_input_of_the_graph_is_named(gate_graph: Callable[[str], Graph]) -> None:
    graph = gate_graph("[first.numbers, first.nope]")
    with pytest.raises(ConfigError, match="'gateway' asks to make requests to 'first.nope'"):
        acl.users(graph)
