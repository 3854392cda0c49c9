"""Delivery through Redis Streams: fan-out, shared work, acknowledgement, dead letters."""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import redis

from conftest import caught_up, read_messages, wait_until, write_messages
from graphrun import Agent, Input, codec
from graphrun.message import Message
from graphrun.transport import trimmed_before_read

RELAY = """\
name: t
redis: {{main: {{}}}}
agents:
  relay:
    type: sample_agents:Relay
    params: {params}
    inputs:
      items: {{from: "main:in", claim_idle_ms: 500, max_deliveries: 3}}
    outputs: {{copies: {{stream: out, maxlen: 100000}}}}
"""


def seqs(client: redis.Redis, stream: str) -> list[int]:
    return [m["seq"] for m in read_messages(client, stream)]


def pending(client: redis.Redis, stream: str, group: str) -> int:
    """Entries of ``stream`` delivered to ``group`` and not yet acknowledged (-1: no group yet)."""
    try:
        return client.xpending(stream, group)["pending"]
    except redis.ResponseError:
        return -1


def consumers(client: redis.Redis, stream: str, group: str) -> list[str]:
    """Names of the consumers ``group`` has on ``stream`` (none before the group exists)."""
    try:
        return sorted(c["name"].decode() for c in client.xinfo_consumers(stream, group))
    except redis.ResponseError:
        return []


def health(client: redis.Redis, consumer: str = "relay-0") -> dict:
    """The health record a relay consumer of graph ``t`` last published ({} before the first)."""
    raw = client.hget("graphrun:health:t:relay", consumer)
    return json.loads(raw) if raw else {}


def dead_letters(client: redis.Redis, stream: str = "in:dead") -> list[dict[bytes, bytes]]:
    return [fields for _, fields in client.xrange(stream)]


def test_every_reader_of_a_stream_gets_every_message(redis_client, graph_file, start_agent) -> None:
    graph = graph_file("""\
name: t
agents:
  source: {type: sample_agents:Source, params: {count: 300}, outputs: {items: main:items}}
  left: {type: sample_agents:Relay, inputs: {items: source.items}, outputs: {copies: main:left}}
  right: {type: sample_agents:Relay, inputs: {items: source.items}, outputs: {copies: main:right}}
""")
    for name in ("left", "right", "source"):
        start_agent(graph, name)
    wait_until(lambda: redis_client.xlen("left") == 300 and redis_client.xlen("right") == 300, what="both readers")
    assert seqs(redis_client, "left") == list(range(300))
    assert seqs(redis_client, "right") == list(range(300))


def test_replicas_share_the_work_and_each_message_is_handled_once(redis_client, graph_file, start_agent) -> None:
    graph = graph_file(RELAY.format(params="{delay_ms: 1}"))
    for replica in (0, 1):
        start_agent(graph, "relay", replica=replica, health_interval=0.1)
    # Both replicas are reading before the work arrives.
    wait_until(lambda: len(consumers(redis_client, "in", "relay")) == 2, what="both replicas in the group")
    write_messages(redis_client, "in", [{"seq": i} for i in range(400)])
    wait_until(lambda: caught_up(redis_client, "in", "relay"), what="all 400 read and acknowledged")
    assert sorted(seqs(redis_client, "out")) == list(range(400))
    assert sorted(consumers(redis_client, "in", "relay")) == ["relay-0", "relay-1"]
    wait_until(lambda: sum(health(redis_client, c).get("handled", 0) for c in ("relay-0", "relay-1")) == 400,
               what="health records counting all 400")
    handled = {c: health(redis_client, c)["handled"] for c in ("relay-0", "relay-1")}
    assert all(n > 0 for n in handled.values()), handled


def test_a_message_is_acknowledged_only_after_its_outputs_are_written(redis_client, graph_file, start_agent) -> None:
    graph = graph_file(RELAY.format(params="{}"))
    write_messages(redis_client, "in", [{"seq": i} for i in range(50)])
    start_agent(graph, "relay")
    wait_until(lambda: pending(redis_client, "in", "relay") == 0 and redis_client.xlen("out") == 50, what="acks")
    out = read_messages(redis_client, "out")
    assert [m["seq"] for m in out] == list(range(50))
    # The trace: origin time kept, one hop added by the relay.
    assert all(m.producer == "relay" and [h.agent for h in m.hops] == ["relay"] for m in out)


def test_a_poison_message_is_dead_lettered_after_max_deliveries_and_the_rest_flow(redis_client, graph_file, start_agent) -> None:
    graph = graph_file(RELAY.format(params="{poison: [3]}"))
    write_messages(redis_client, "in", [{"seq": i} for i in range(10)])
    start_agent(graph, "relay")
    wait_until(lambda: redis_client.xlen("in:dead") == 1, what="the dead letter")
    wait_until(lambda: pending(redis_client, "in", "relay") == 0, what="nothing pending")
    assert sorted(seqs(redis_client, "out")) == [0, 1, 2, 4, 5, 6, 7, 8, 9]
    [dead] = dead_letters(redis_client)
    assert dead[b"dl:agent"] == b"relay" and dead[b"dl:stream"] == b"in"
    assert b"max_deliveries=3" in dead[b"dl:error"] and b"poison item 3" in dead[b"dl:error"]
    assert codec.decode(dead)["seq"] == 3  # the original message travels with its error


def test_dead_letter_raised_by_the_agent_moves_the_message_at_once(redis_client, graph_file, start_agent) -> None:
    graph = graph_file(RELAY.format(params="{reject: [1]}"))
    write_messages(redis_client, "in", [{"seq": i} for i in range(3)])
    start_agent(graph, "relay")
    wait_until(lambda: redis_client.xlen("in:dead") == 1 and redis_client.xlen("out") == 2, what="one rejection")
    [dead] = dead_letters(redis_client)
    assert dead[b"dl:error"] == b"DeadLetter: item 1 is rejected"


def test_a_malformed_entry_is_dead_lettered_and_does_not_stop_the_agent(redis_client, graph_file, start_agent) -> None:
    graph = graph_file(RELAY.format(params="{}"))
    write_messages(redis_client, "in", [{"seq": 0}])
    redis_client.xadd("in", {"junk": "not a message"})
    truncated = codec.encode(Message({"seq": 1, "img": np.zeros(100, np.uint8)}))
    truncated = {k: bytes(v)[:50] if k == b"b0" else v for k, v in truncated.items()}
    redis_client.xadd("in", truncated)
    write_messages(redis_client, "in", [{"seq": 2}])
    start_agent(graph, "relay")
    wait_until(lambda: redis_client.xlen("in:dead") == 2 and redis_client.xlen("out") == 2, what="two dead letters")
    errors = [d[b"dl:error"].decode() for d in dead_letters(redis_client)]
    assert "no header field" in errors[0] and "truncated" in errors[1]
    assert seqs(redis_client, "out") == [0, 2]


def test_retry_hands_the_message_back_later(redis_client, graph_file, start_agent) -> None:
    graph = graph_file(RELAY.format(params="{retry_once: [0]}"))
    write_messages(redis_client, "in", [{"seq": 0}, {"seq": 1}])
    start_agent(graph, "relay")
    wait_until(lambda: redis_client.xlen("out") == 2, what="both copies")
    assert seqs(redis_client, "out") == [1, 0]
    assert redis_client.xlen("in:dead") == 0


def test_entries_a_dead_consumer_left_pending_are_reclaimed(redis_client, graph_file, start_agent) -> None:
    graph = graph_file(RELAY.format(params="{}"))
    write_messages(redis_client, "in", [{"seq": i} for i in range(20)])
    redis_client.xgroup_create("in", "relay", "0")
    # A consumer that read ten entries and died before acknowledging them.
    redis_client.xreadgroup("relay", "relay-gone", {"in": ">"}, count=10)
    start_agent(graph, "relay")
    wait_until(lambda: redis_client.xlen("out") == 20, what="all 20, the reclaimed ten included")
    assert sorted(seqs(redis_client, "out")) == list(range(20))
    assert pending(redis_client, "in", "relay") == 0


def test_held_messages_are_acknowledged_only_when_released(redis_client, graph_file, start_agent) -> None:
    graph = graph_file("""\
name: t
agents:
  join:
    type: sample_agents:Joiner
    inputs: {parts: {front: "main:front", back: "main:back"}}
    outputs: {joined: main:joined}
""")
    write_messages(redis_client, "front", [{"seq": 1}, {"seq": 2}])
    write_messages(redis_client, "back", [{"seq": 1}])
    runner = start_agent(graph, "join")
    wait_until(lambda: redis_client.xlen("joined") == 1, what="the first join")
    wait_until(lambda: pending(redis_client, "front", "join") == 1, what="the held front view of part 2")
    assert pending(redis_client, "back", "join") == 0
    [joined] = read_messages(redis_client, "joined")
    assert joined["seq"] == 1 and joined["ports"] == ["back", "front"]
    assert runner.counters.handled == 3


def test_entries_trimmed_before_a_group_that_never_read_are_counted(redis_client) -> None:
    from graphrun.transport import ensure_group

    ensure_group(redis_client, "s", "idle")
    for i in range(20):
        redis_client.xadd("s", {"i": i}, maxlen=5, approximate=False)
    assert trimmed_before_read(redis_client, "s", "idle") == 15


def test_entries_trimmed_while_the_agent_was_stopped_are_counted_by_the_agent(redis_client, graph_file, start_agent) -> None:
    graph = graph_file(RELAY.format(params="{}"))
    first = start_agent(graph, "relay", health_interval=1.0)
    wait_until(lambda: consumers(redis_client, "in", "relay") == ["relay-0"], what="the agent reading its input")
    first.request_stop()
    wait_until(lambda: health(redis_client).get("state") == "stopped", what="the agent to stop")
    # While it is away, 50 entries arrive on a stream bounded to 10.
    for i in range(50):
        redis_client.xadd("in", codec.encode(Message({"seq": i})), maxlen=10, approximate=False)
    assert redis_client.xlen("in") == 10
    start_agent(graph, "relay", health_interval=0.1)
    wait_until(lambda: caught_up(redis_client, "in", "relay"), what="the ten left to be handled")
    assert seqs(redis_client, "out") == list(range(40, 50))
    wait_until(lambda: trimmed_before_read(redis_client, "in", "relay") == 40, what="the runner's delivery count")
    wait_until(lambda: health(redis_client).get("trimmed_before_read") == {"items": 40},
               what="the agent to report the trimmed entries")


def test_health_is_published_per_consumer(redis_client, graph_file, start_agent) -> None:
    graph = graph_file(RELAY.format(params="{}"))
    write_messages(redis_client, "in", [{"seq": i} for i in range(5)])
    start_agent(graph, "relay")
    wait_until(lambda: redis_client.xlen("out") == 5)
    wait_until(lambda: health(redis_client).get("handled") == 5, what="a health record with the count")
    assert health(redis_client)["state"] == "running" and health(redis_client)["dead_lettered"] == 0


def test_inputs_on_two_redis_instances_are_both_read_and_acknowledged_where_they_live(
        redis_server, redis_client, graph_file) -> None:
    from graphrun.redis_server import RedisServer
    from graphrun.runner import AgentRunner
    import threading

    with RedisServer(name="second") as second:
        other = redis.Redis.from_url(second.url)
        graph = graph_file("""\
name: t
redis: {main: {}, cell: {}}
agents:
  join:
    type: sample_agents:Joiner
    inputs: {parts: {front: "main:front", back: "cell:back"}}
    outputs: {joined: main:joined}
""")
        runner = AgentRunner(graph, "join", replica=0, redis_urls={"main": redis_server.url, "cell": second.url})
        thread = threading.Thread(target=runner.run, daemon=True)
        thread.start()
        try:
            write_messages(redis_client, "front", [{"seq": i} for i in range(30)])
            write_messages(other, "back", [{"seq": i} for i in range(30)])
            wait_until(lambda: redis_client.xlen("joined") == 30, what="30 joins across two instances")
            wait_until(lambda: pending(redis_client, "front", "join") == 0 and pending(other, "back", "join") == 0,
                       what="acknowledgements on both instances")
        finally:
            runner.request_stop()
            thread.join(15)
        assert sorted(m["seq"] for m in read_messages(redis_client, "joined")) == list(range(30))
        assert not other.exists("joined")


def slow_health(client: redis.Redis) -> dict:
    raw = client.hget("graphrun:health:t:slow", "slow-0")
    return json.loads(raw) if raw else {}


class SlowReader(Agent):
    """Takes 20 ms a message: entries wait in its reader threads' queue, read but not yet handled."""

    a = Input()
    b = Input()

    def handle(self, msg: Message) -> None:
        time.sleep(0.02)


def test_entries_read_but_not_yet_handled_are_never_counted_as_trimmed(redis_server, redis_client, graph_file) -> None:
    """Inputs on two instances are read by reader threads ahead of the handling thread;
    those entries are delivered, not trimmed (the streams here have no bound at all)."""
    from graphrun.redis_server import RedisServer
    from graphrun.runner import AgentRunner

    with RedisServer(name="second") as second:
        other = redis.Redis.from_url(second.url)
        graph = graph_file("""\
name: t
redis: {main: {}, cell: {}}
agents:
  slow: {type: test_delivery:SlowReader, inputs: {a: "main:a", b: "cell:b"}}
""")
        runner = AgentRunner(graph, "slow", replica=0, redis_urls={"main": redis_server.url, "cell": second.url},
                             health_interval=0.05)
        thread = threading.Thread(target=runner.run, daemon=True)
        thread.start()
        reported: list[dict] = []
        try:
            wait_until(lambda: slow_health(redis_client).get("state") == "running", what="the agent running")
            for i in range(60):
                write_messages(redis_client, "a", [{"seq": i}])
                write_messages(other, "b", [{"seq": i}])
                reported.append(slow_health(redis_client).get("trimmed_before_read") or {})
                time.sleep(0.01)
            wait_until(lambda: runner.counters.handled == 120, what="all 120 handled")
            reported.append(slow_health(redis_client).get("trimmed_before_read") or {})
        finally:
            runner.request_stop()
            thread.join(15)
        assert {port: n for r in reported for port, n in r.items() if n} == {}
        assert trimmed_before_read(redis_client, "a", "slow") == 0 and trimmed_before_read(other, "b", "slow") == 0


def test_replicas_never_count_each_other_s_entries_in_hand_as_trimmed(redis_client, graph_file, start_agent) -> None:
    """Two replicas share a group on an unbounded stream: what one has read and not yet
    counted is not "trimmed" to the other."""
    graph = graph_file(RELAY.format(params="{}"))
    for replica in (0, 1):
        start_agent(graph, "relay", replica=replica, health_interval=0.05)
    wait_until(lambda: len(consumers(redis_client, "in", "relay")) == 2, what="both replicas reading")
    reported: list[dict] = []
    for i in range(150):
        write_messages(redis_client, "in", [{"seq": i}])
        reported += [health(redis_client, c).get("trimmed_before_read") or {} for c in ("relay-0", "relay-1")]
        time.sleep(0.005)
    wait_until(lambda: redis_client.xlen("out") == 150, what="all 150 relayed")
    assert {port: n for r in reported for port, n in r.items() if n} == {}


def test_entries_a_killed_replica_had_read_are_not_counted_as_trimmed_once_reclaimed(
        redis_client, graph_file, start_agent) -> None:
    from graphrun.transport import ensure_group

    graph = graph_file(RELAY.format(params="{}"))
    ensure_group(redis_client, "in", "relay")
    write_messages(redis_client, "in", [{"seq": i} for i in range(15)])
    # A replica that read five entries and was killed before it acknowledged them.
    [(_, taken)] = redis_client.xreadgroup("relay", "relay-9", {"in": ">"}, count=5)
    assert len(taken) == 5
    start_agent(graph, "relay", health_interval=0.05)
    wait_until(lambda: redis_client.xlen("out") == 15, what="ten read and five reclaimed, all relayed")
    wait_until(lambda: pending(redis_client, "in", "relay") == 0, what="all acknowledged")
    assert trimmed_before_read(redis_client, "in", "relay") == 0
    wait_until(lambda: "trimmed_before_read" in health(redis_client), what="a health record")
    assert not any((health(redis_client).get("trimmed_before_read") or {}).values())
