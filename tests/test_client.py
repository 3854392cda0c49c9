"""Requests from outside a running graph: GraphClient against real agents and a real Redis."""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import time
from collections import Counter
from pathlib import Path

import pytest
import redis
from conftest import wait_until
from graphrun import (
    AsyncGraphClient,
    BacklogFull,
    ConfigError,
    GraphClient,
    RequestTimeout,
)
from graphrun.errors import UnknownPort
from graphrun.replies import REPLY_PREFIX
from request_agents import ask_many

TWO_DOUBLERS = """\
name: ask
redis: {{main: {{url: "{url}"}}}}
agents:
  first:
    type: examples.doubler
    inputs: {{numbers: {{from: "main:ask.numbers"}}}}
    outputs: {{doubled: "main:ask.doubled"}}
  second:
    type: examples.doubler
    params: {{factor: 3}}
    inputs: {{numbers: first.doubled}}
    outputs: {{doubled: "main:ask.answers"}}
"""

CHUNKER = """\
name: words
redis: {{main: {{url: "{url}"}}}}
agents:
  chunker:
    type: request_agents:Chunker
    params: {{pause_ms: {pause}}}
    inputs: {{texts: {{from: "main:words.texts"}}}}
"""


def reply_keys(client: redis.Redis) -> list[bytes]:
    return list(client.scan_iter(match=REPLY_PREFIX + "*"))


@pytest.fixture
def doublers(graph_file, redis_server, start_agent):
    graph = graph_file(TWO_DOUBLERS.format(url=redis_server.url))
    runners = [start_agent(graph, "first"), start_agent(graph, "second")]
    for runner in runners:
        wait_until(runner.started.is_set, what="agents started")
    return graph


def test_a_request_is_answered_by_the_last_agent_of_a_two_agent_graph(doublers, redis_client):
    with GraphClient(doublers) as client:
        answer = client.request("first.numbers", {"value": 7, "seq": 1}, timeout=20)
    assert answer.payload == {"value": 42, "seq": 1}  # 7 * 2 by first, * 3 by second
    assert [hop.agent for hop in answer.hops] == ["first", "second"]
    # The graph's own streams carry the messages as ever.
    assert redis_client.xlen("ask.doubled") == 1 and redis_client.xlen("ask.answers") == 1


def test_submit_and_result_answer_each_request_with_its_own_answer(doublers):
    with GraphClient(doublers) as client:
        tickets = [client.submit("first.numbers", {"value": v, "seq": v}, timeout=20) for v in range(20)]
        answers = [client.result(t) for t in reversed(tickets)]
    assert [a["value"] for a in answers] == [6 * v for v in reversed(range(20))]


def test_the_answer_can_come_from_another_port_than_the_graph_ends_with(doublers):
    with GraphClient(doublers) as client:
        answer = client.request("first.numbers", {"value": 5, "seq": 0}, timeout=20, answer="first.doubled")
    assert answer["value"] == 10


def test_a_client_made_from_a_redis_url_needs_the_answering_port_named(doublers, redis_server):
    with GraphClient(redis_server.url) as client:
        with pytest.raises(ConfigError, match="answer="):
            client.request("ask.numbers", {"value": 1, "seq": 0})
        answer = client.request("ask.numbers", {"value": 1, "seq": 0}, timeout=20, answer="second.doubled")
    assert answer["value"] == 6


def test_thousand_concurrent_requests_from_several_processes_are_each_answered_once_to_their_caller(
        doublers, redis_client):
    callers, each = 4, 250
    spawn = multiprocessing.get_context("spawn")
    results = spawn.Queue()
    processes = [spawn.Process(target=ask_many, args=(doublers.file, c, each, results)) for c in range(callers)]
    for p in processes:
        p.start()
    answers, dropped, finished = [], {}, 0
    deadline = time.monotonic() + 120  # a guard against a hang, not a speed limit
    while finished < callers:
        item = results.get(timeout=max(1.0, deadline - time.monotonic()))
        if item is None:
            finished += 1
        elif item[0] == "dropped":
            dropped[item[1]] = item[2]
        else:
            answers.append(item)
    for p in processes:
        p.join(30)
        assert p.exitcode == 0
    assert len(answers) == callers * each
    per_request = Counter((caller, seq) for caller, seq, _, _ in answers)
    assert set(per_request.values()) == {1} and len(per_request) == callers * each
    for caller, seq, value, answered_seq in answers:  # the right caller, the right request
        assert (value, answered_seq) == (6 * (caller * 100_000 + seq), seq)
    assert dropped == {c: 0 for c in range(callers)}  # no answer came twice
    wait_until(lambda: not reply_keys(redis_client), timeout=10, what="reply streams deleted on close")


def test_a_timeout_raises_and_leaves_nothing_behind_in_redis(graph_file, redis_server, redis_client):
    graph = graph_file(TWO_DOUBLERS.format(url=redis_server.url))  # no agent runs
    with GraphClient(graph) as client:
        started = time.monotonic()
        with pytest.raises(RequestTimeout, match="second.doubled"):
            client.request("first.numbers", {"value": 1, "seq": 0}, timeout=0.3)
        assert time.monotonic() - started >= 0.3
        assert redis_client.xlen("ask.numbers") == 0  # the request was taken back
    assert reply_keys(redis_client) == []


def test_a_request_given_up_is_taken_back_and_a_vanished_callers_reply_stream_expires(graph_file, redis_server,
                                                                              redis_client, start_agent):
    graph = graph_file(CHUNKER.format(url=redis_server.url, pause=0))
    client = GraphClient(graph)
    try:
        ticket = client.submit("chunker.texts", {"text": "late answer"}, timeout=30)
        client.give_up(ticket)  # the caller stops waiting before any agent ran
        runner = start_agent(graph, "chunker")
        wait_until(runner.started.is_set, what="chunker started")
        assert client.request("chunker.texts", {"text": "now"}, timeout=20)["word"] == "now"
        assert runner.counters.received == 1  # the request given up never reached the agent
    finally:
        client.close()
    assert reply_keys(redis_client) == []
    # Without close (a caller that died), the reply stream lives on the time to live the
    # runtime gives it with each answer: the request's deadline and a grace period.
    crashed = GraphClient(graph)
    crashed.request("chunker.texts", {"text": "one two"}, timeout=5)
    crashed._reader.stop()
    assert 0 < redis_client.ttl(crashed.reply_key) <= 5 + 30


def test_a_streamed_answer_arrives_in_order_until_its_end(graph_file, redis_server, start_agent):
    graph = graph_file(CHUNKER.format(url=redis_server.url, pause=2))
    runner = start_agent(graph, "chunker")
    wait_until(runner.started.is_set, what="chunker started")
    text = " ".join(f"w{i}" for i in range(40))
    with GraphClient(graph) as client:
        parts = list(client.stream("chunker.texts", {"text": text}, timeout=30))
        last = client.request("chunker.texts", {"text": "a b c"}, timeout=30)
    assert [(p["index"], p["word"]) for p in parts] == list(enumerate(text.split()))
    assert last.payload == {"index": 2, "word": "c"}  # request() returns a streamed answer's last part


def test_an_expired_request_is_skipped_not_processed(graph_file, redis_server, redis_client, start_agent, caplog):
    caplog.set_level(logging.INFO, logger="graphrun.runner")
    graph = graph_file(TWO_DOUBLERS.format(url=redis_server.url))
    with GraphClient(graph) as client:
        tickets = client.submit_many("first.numbers", [{"value": v, "seq": v} for v in range(5)], timeout=0.2)
        time.sleep(0.4)  # their deadline passes before any agent runs; the caller has not given up yet
        first = start_agent(graph, "first")
        wait_until(lambda: first.counters.expired == 5, what="expired requests skipped")
        assert first.counters.handled == 0
        assert redis_client.xlen("ask.doubled") == 0  # nothing was processed
        assert redis_client.xinfo_groups("ask.numbers")[0]["pending"] == 0  # and nothing is left pending
        assert caplog.text.count("reached its deadline") == 5  # each skip is said in the log
        with pytest.raises(RequestTimeout):
            client.result(tickets[0])


def test_backlog_counts_what_the_agent_has_not_finished_and_the_limit_refuses_more(graph_file, redis_server,
                                                                                   start_agent):
    graph = graph_file(TWO_DOUBLERS.format(url=redis_server.url))
    with GraphClient(graph, max_backlog=3) as client:
        assert client.backlog("first.numbers") == 0
        client.submit_many("first.numbers", [{"value": v, "seq": v} for v in range(3)], timeout=30)
        assert client.backlog("first.numbers") == 3
        with pytest.raises(BacklogFull, match="limit is 3"):
            client.submit("first.numbers", {"value": 9, "seq": 9})
        start_agent(graph, "first")
        start_agent(graph, "second")
        wait_until(lambda: client.backlog("first.numbers") == 0, what="backlog worked off")
        time.sleep(0.2)  # past the client's cached look at the backlog
        # Answered requests stop counting at once: more in a row than the limit all pass.
        assert [client.request("first.numbers", {"value": v, "seq": v}, timeout=20)["value"]
                for v in range(10)] == [6 * v for v in range(10)]


def test_higher_priority_requests_of_one_read_are_handled_first(graph_file, redis_server, start_agent):
    graph = graph_file(CHUNKER.format(url=redis_server.url, pause=0))
    with GraphClient(graph) as client:
        low = client.submit_many("chunker.texts", [{"text": f"low{i}"} for i in range(5)], timeout=30)
        high = client.submit("chunker.texts", {"text": "high"}, timeout=30, priority=5)
        runner = start_agent(graph, "chunker")  # one read takes all six
        answers = [client.result(t) for t in [*low, high]]
    order = [hop.sent for a in answers for hop in a.hops]
    assert order[-1] < min(order[:-1])  # the high-priority request, sent last, was handled first
    assert runner.counters.handled == 6


def test_an_unknown_port_is_named_with_the_ports_there_are(doublers):
    with GraphClient(doublers) as client, pytest.raises(UnknownPort, match="its inputs: first.numbers"):
        client.request("first.numbrs", {"value": 1, "seq": 0})


def test_graph_file_path_is_accepted_as_the_target(doublers):
    with GraphClient(Path(doublers.file)) as client:
        assert client.request("first.numbers", {"value": 2, "seq": 0}, timeout=20)["value"] == 12


def test_the_asyncio_client_requests_streams_and_times_out(graph_file, redis_server, redis_client, start_agent):
    graph = graph_file(CHUNKER.format(url=redis_server.url, pause=1))
    runner = start_agent(graph, "chunker")
    wait_until(runner.started.is_set, what="chunker started")

    async def main() -> tuple[list[str], list[str]]:
        async with AsyncGraphClient(graph) as client:
            answers = await asyncio.gather(*(client.request("chunker.texts", {"text": f"x{i} y{i}"}, timeout=20)
                                             for i in range(10)))
            parts = [m["word"] async for m in client.stream("chunker.texts", {"text": "a b c d"}, timeout=20)]
            with pytest.raises(RequestTimeout, match="nobody.answers"):  # no agent has that port
                await client.request("chunker.texts", {"text": "never"}, timeout=0.3, answer="nobody.answers")
            return [a["word"] for a in answers], parts

    words, parts = asyncio.run(main())
    assert words == [f"y{i}" for i in range(10)]
    assert parts == ["a", "b", "c", "d"]
    assert reply_keys(redis_client) == []
