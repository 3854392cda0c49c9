"""The Modbus agent against a real pymodbus TCP server (the PLC simulator) in the test process."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import ValidationError

from graphrun import DeadLetter, Retry
from graphrun.testing import AgentHarness
from graphrun_agents.errors import PlcAddressRefused, PlcExceptionReply
from graphrun_agents.modbus.agent import ModbusAgent
from graphrun_agents.modbus.layout import Request
from graphrun_agents.modbus.plc import PlcLink
from graphrun_agents.modbus.regmap import RegisterMap
from graphrun_agents.modbus.simulator import PlcSimulator, free_port

VIEWS = {"verdicts": ["front", "back"]}


def verdict(part_id: int, camera: str, *, defective: bool = False, score: float = 0.1,
            label: str | None = None) -> dict[str, Any]:
    return {
        "part_id": part_id, "camera": camera, "defective": defective,
        "label": label or ("scratch" if defective else "ok"), "score": score, "threshold": 0.5,
        "model": "finger-follower", "model_version": "1", "backend": "onnxruntime",
        "preprocess_ms": 1.0, "inference_ms": 2.0,
    }


def harness(sim: PlcSimulator, regmap: dict | None = None, **params: Any) -> AgentHarness:
    settings = {"host": sim.host, "port": sim.port, "unit": sim.unit, "timeout": 0.5, **params}
    if regmap is not None:
        settings["map"] = regmap
    return AgentHarness(ModbusAgent, name="plc", params=settings, groups=VIEWS)


def both_views(h: AgentHarness, part_id: int, **front: Any) -> None:
    h.send("front", verdict(part_id, "front", **front))
    h.send("back", verdict(part_id, "back"))


@pytest.fixture
def plc() -> Iterator[PlcSimulator]:
    with PlcSimulator(RegisterMap()) as sim:
        yield sim


# --- encodings, read back from the server ------------------------------------------------


@pytest.mark.parametrize(
    ("entry", "field", "front", "expected"),
    [
        ({"encoding": "uint32"}, "part_id", {}, [0x1234, 0x5678]),
        ({"encoding": "uint32", "word_order": "little"}, "part_id", {}, [0x5678, 0x1234]),
        ({"encoding": "uint32", "byte_order": "little"}, "part_id", {}, [0x3412, 0x7856]),
        ({"encoding": "uint32", "byte_order": "little", "word_order": "little"}, "part_id", {}, [0x7856, 0x3412]),
        ({"encoding": "int32", "word_order": "little"}, "part_id", {}, [0x5678, 0x1234]),
        ({"encoding": "uint16"}, "part_id", {}, [0xABCD]),
        ({"encoding": "uint16", "byte_order": "little"}, "part_id", {}, [0xCDAB]),
        ({"encoding": "int16"}, "part_id", {}, [0xFED4]),
        ({"encoding": "int16", "byte_order": "little"}, "part_id", {}, [0xD4FE]),
        ({"encoding": "float32"}, "score", {"score": 1.1}, [0x3F8C, 0xCCCD]),
        ({"encoding": "float32", "word_order": "little"}, "score", {"score": 1.1}, [0xCCCD, 0x3F8C]),
        ({"encoding": "float32", "byte_order": "little"}, "score", {"score": 1.1}, [0x8C3F, 0xCDCC]),
        ({"encoding": "float32", "byte_order": "little", "word_order": "little"}, "score", {"score": 1.1},
         [0xCDCC, 0x8C3F]),
        ({"encoding": "bool"}, "defective", {"defective": True}, [1]),
        ({"encoding": "bool", "byte_order": "little"}, "defective", {"defective": True}, [0x0100]),
        ({"table": "coil", "encoding": "bool"}, "defective", {"defective": True}, [1]),
        ({"encoding": "int16"}, "code", {"defective": True, "label": "crack"}, [3]),
        ({"encoding": "uint16", "scale": 1000}, "score", {"score": 0.9374}, [937]),
    ],
)
def test_each_encoding_and_byte_and_word_order_reaches_the_plc_as_specified(
    entry: dict, field: str, front: dict, expected: list[int]
) -> None:
    part_id = {"uint32": 0x12345678, "int32": 0x12345678, "uint16": 0xABCD, "int16": -300}.get(
        entry["encoding"] if field == "part_id" else "", 7)
    address = 20 if entry.get("table") == "coil" else 110
    regmap = {field: {"address": address, **entry}, "codes": {"chip": 2, "crack": 3}}
    with PlcSimulator(RegisterMap.model_validate(regmap)) as sim, harness(sim, regmap) as h:
        both_views(h, part_id, **front)
        assert sim.read(entry.get("table", "holding"), address, len(expected)) == expected
        assert sim.read("holding", 100) == [1]  # and the counter says a result is there


def test_a_uint32_counter_with_little_word_order_is_written_as_declared() -> None:
    regmap = {"sequence": {"address": 98, "encoding": "uint32", "word_order": "little"}}
    with PlcSimulator(RegisterMap.model_validate(regmap)) as sim, harness(sim, regmap) as h:
        both_views(h, 1)
        both_views(h, 2)
        assert sim.read("holding", 98, 2) == [2, 0]


# --- the join, through the agent ---------------------------------------------------------


def test_a_part_is_written_once_every_view_has_sent_its_verdict(plc: PlcSimulator) -> None:
    with harness(plc) as h:
        first = h.send("front", verdict(41, "front"))
        assert plc.results == [] and h.held == [first]
        second = h.send("back", verdict(41, "back"))
        assert [(r.sequence, r.values) for r in plc.results] == [(1, {"part_id": 41, "outcome": 0})]
        assert h.held == [] and h.released == [first, second]


def test_a_part_is_defective_if_any_view_is(plc: PlcSimulator) -> None:
    with harness(plc) as h:
        h.send("front", verdict(1, "front"))
        h.send("back", verdict(1, "back", defective=True, score=0.93))
        assert plc.results[-1].values == {"part_id": 1, "outcome": 1}


def test_a_part_with_a_missing_view_gets_the_incomplete_outcome(plc: PlcSimulator) -> None:
    with harness(plc, join_timeout=0.5) as h:
        front = h.send("front", verdict(5, "front"))
        h.tick()
        assert plc.results == []
        time.sleep(0.55)
        h.tick()
        assert [(r.sequence, r.values) for r in plc.results] == [(1, {"part_id": 5, "outcome": 2})]
        assert h.released == [front]
        late = h.send("back", verdict(5, "back"))
        assert len(plc.results) == 1 and late not in h.held  # acknowledged, not written again


def test_the_incomplete_outcome_is_configurable(plc: PlcSimulator) -> None:
    regmap = {"outcomes": {"incomplete": 1}}
    with harness(plc, regmap, join_timeout=0.1) as h:
        h.send("back", verdict(6, "back"))
        time.sleep(0.15)
        h.tick()
        assert plc.results[-1].values["outcome"] == 1


def test_a_verdict_delivered_twice_writes_its_part_once(plc: PlcSimulator) -> None:
    with harness(plc) as h:
        h.send("front", verdict(8, "front"))
        h.send("front", verdict(8, "front"))
        h.send("back", verdict(8, "back"))
        again = h.send("back", verdict(8, "back"))
        assert [r.values["part_id"] for r in plc.results] == [8]
        assert len(h.released) == 3 and again not in h.held


def test_after_a_restart_the_counter_continues_and_the_last_part_is_not_written_again(plc: PlcSimulator) -> None:
    with harness(plc) as h:
        both_views(h, 1)
        both_views(h, 2)
    with harness(plc) as h:  # a crash before the release redelivers part 2's verdicts
        both_views(h, 2)
        both_views(h, 3)
        assert h.held == []
    assert [(r.sequence, r.values["part_id"]) for r in plc.results] == [(1, 1), (2, 2), (3, 3)]


def test_the_counter_wraps_from_65535_to_1(plc: PlcSimulator) -> None:
    link = PlcLink(plc.host, plc.port, plc.unit, allowed={"holding": frozenset({100}), "coil": frozenset()})
    link.write(Request("holding", 100, (65534,), ("sequence",)))  # results written before this run
    link.close()
    with harness(plc) as h:
        both_views(h, 1)
        both_views(h, 2)
    assert [(r.sequence, r.values["part_id"]) for r in plc.results[1:]] == [(65535, 1), (1, 2)]


def test_a_plc_that_restarts_with_cleared_registers_gets_the_next_counter_value(plc: PlcSimulator) -> None:
    with harness(plc, reconnect_min=0.05) as h:
        both_views(h, 1)
        plc.stop()
        with PlcSimulator(RegisterMap(), port=plc.port) as restarted:
            both_views(h, 2)
            time.sleep(0.1)
            h.tick()
            assert [(r.sequence, r.values["part_id"]) for r in restarted.results] == [(2, 2)]
            assert h.held == []


def test_while_the_plc_is_down_verdicts_beyond_the_queue_limit_wait_in_redis(plc: PlcSimulator) -> None:
    with harness(plc, max_queue=2, reconnect_min=30.0, reconnect_max=30.0) as h:
        plc.stop()
        both_views(h, 1)
        both_views(h, 2)
        with pytest.raises(Retry, match="2 results are waiting for the PLC"):
            h.send("front", verdict(3, "front"))
        assert len(h.held) == 4 and plc.results == []


def test_a_part_id_the_map_cannot_encode_is_dead_lettered(plc: PlcSimulator) -> None:
    with harness(plc, {"part_id": {"address": 101, "encoding": "uint16"}, "outcome": {"address": 102}}) as h:
        with pytest.raises(DeadLetter, match="part_id: 70000 is out of the uint16 range"):
            h.send("front", verdict(70000, "front"))


def test_a_verdict_without_a_part_id_is_dead_lettered(plc: PlcSimulator) -> None:
    payload = verdict(1, "front")
    del payload["part_id"]
    with harness(plc) as h, pytest.raises(DeadLetter, match="verdict on 'front' has no part_id"):
        h.send("front", payload)


def test_an_outcome_encoded_bool_on_a_coil_is_set_for_a_rejected_part() -> None:
    regmap = {"outcome": {"table": "coil", "address": 7, "encoding": "bool"}}
    with PlcSimulator(RegisterMap.model_validate(regmap)) as sim, harness(sim, regmap, join_timeout=0.05) as h:
        both_views(h, 1)
        assert sim.read("coil", 7) == [0]
        h.send("front", verdict(2, "front"))
        time.sleep(0.1)
        h.tick()  # incomplete: rejected too
        assert sim.read("coil", 7) == [1]
        assert [r.values["outcome"] for r in sim.results] == [False, True]


# --- the handshake -------------------------------------------------------------------------


HANDSHAKE = {"result_read": {"address": 110, "timeout": 30.0}}


def test_the_next_result_waits_until_the_plc_has_taken_the_last_one() -> None:
    with PlcSimulator(RegisterMap.model_validate(HANDSHAKE), take_results=False) as sim, \
            harness(sim, HANDSHAKE) as h:
        both_views(h, 1)
        both_views(h, 2)
        assert [r.values["part_id"] for r in sim.results] == [1]
        assert len(h.held) == 2 and h.agent.status["plc"] == "connected"
        sim.take(1)
        h.tick()
        assert [r.values["part_id"] for r in sim.results] == [1, 2]
        assert h.held == []


def test_a_plc_that_takes_each_result_gets_them_all() -> None:
    with PlcSimulator(RegisterMap.model_validate(HANDSHAKE)) as sim, harness(sim, HANDSHAKE) as h:
        for part_id in range(1, 6):
            both_views(h, part_id)
        assert [r.values["part_id"] for r in sim.results] == [1, 2, 3, 4, 5]
        assert sim.read("holding", 110) == [5]


def test_a_result_not_taken_within_the_timeout_holds_back_the_next_one() -> None:
    regmap = {"result_read": {"address": 110, "timeout": 0.1}}
    with PlcSimulator(RegisterMap.model_validate(regmap), take_results=False) as sim, harness(sim, regmap) as h:
        both_views(h, 1)
        both_views(h, 2)
        time.sleep(0.15)
        h.tick()
        assert [r.values["part_id"] for r in sim.results] == [1]
        assert h.agent.status["plc"] == "result not taken" and len(h.held) == 2


def test_with_on_timeout_write_a_result_not_taken_is_followed_after_the_timeout() -> None:
    regmap = {"result_read": {"address": 110, "timeout": 0.1, "on_timeout": "write"}}
    with PlcSimulator(RegisterMap.model_validate(regmap), take_results=False) as sim, harness(sim, regmap) as h:
        both_views(h, 1)
        both_views(h, 2)
        time.sleep(0.15)
        h.tick()
        assert [(r.sequence, r.values["part_id"]) for r in sim.results] == [(1, 1), (2, 2)]


# --- errors --------------------------------------------------------------------------------


def test_a_bad_register_map_is_refused_when_the_agent_is_made(plc: PlcSimulator) -> None:
    with pytest.raises(ValidationError, match=r"map entries part_id \(holding 101-102\) and code \(holding 102\)"):
        harness(plc, {"code": {"address": 102}})


def test_an_unreachable_plc_at_start_is_waited_for_with_the_reason_in_the_health_record() -> None:
    port = free_port()
    with AgentHarness(ModbusAgent, params={"host": "127.0.0.1", "port": port, "timeout": 0.3}, groups=VIEWS) as h:
        assert h.status["plc"] == "waiting for PLC"
        assert h.status["plc_error"] == f"cannot connect to PLC 127.0.0.1:{port} unit 1"
        both_views(h, 1)
        assert len(h.held) == 2 and h.released == []


def test_a_map_address_the_plc_lacks_is_reported_at_start_with_its_entry(plc: PlcSimulator) -> None:
    with pytest.raises(PlcExceptionReply, match=r"refused the read of score \(holding 104-105\): illegal data address"):
        with harness(plc, {"score": {"address": 104, "encoding": "float32"}}):
            pass


def test_an_exception_reply_to_a_write_keeps_the_result_queued(plc: PlcSimulator) -> None:
    with harness(plc, reconnect_min=0.05) as h:
        # The PLC restarts with a program that no longer has the outcome register.
        plc.stop()
        plc.map = RegisterMap.model_validate({"outcome": None})
        plc.start()
        both_views(h, 1)
        time.sleep(0.1)
        h.tick()
        assert plc.results == [] and len(h.held) == 2
        assert h.agent.status["plc"].startswith("refused:") and "illegal data address" in h.agent.status["plc"]


def test_a_write_outside_the_map_is_refused_before_it_reaches_the_wire(plc: PlcSimulator) -> None:
    link = PlcLink(plc.host, plc.port, plc.unit, allowed={"holding": frozenset({100}), "coil": frozenset()})
    with pytest.raises(PlcAddressRefused, match="refused to write holding 101 .* the register map does not name"):
        link.write(Request("holding", 100, (9, 9), ("sequence", "part_id")))
    assert plc.read("holding", 100, 2) == [0, 0]
    link.close()
