"""The register map, the write layout and the join: pure logic, no network."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from graphrun_agents.errors import EncodingError, RegisterMapError
from graphrun_agents.modbus.encoding import decode, encode
from graphrun_agents.part_join import Join, Offer, Outcome
from graphrun_agents.modbus.layout import Layout, Request
from graphrun_agents.modbus.regmap import Entry, RegisterMap

# --- the map ---------------------------------------------------------------------------


def test_the_default_map_is_counter_100_part_id_101_and_outcome_103() -> None:
    regmap = RegisterMap()
    assert [(n, e.table, e.address, e.encoding, e.word_order) for n, e in regmap.entries()] == [
        ("part_id", "holding", 101, "uint32", "big"),
        ("outcome", "holding", 103, "uint16", "big"),
        ("sequence", "holding", 100, "uint16", "big"),
    ]
    assert (regmap.outcomes.ok, regmap.outcomes.defective, regmap.outcomes.incomplete) == (0, 1, 2)


def test_overlapping_entries_are_refused_naming_both() -> None:
    with pytest.raises(ValidationError) as caught:
        RegisterMap.model_validate({"score": {"address": 102, "encoding": "float32"}})
    message = str(caught.value)
    assert "part_id (holding 101-102)" in message and "score (holding 102-103)" in message
    assert "overlap" in message


def test_a_coil_and_a_register_at_the_same_address_do_not_overlap() -> None:
    regmap = RegisterMap.model_validate({"defective": {"table": "coil", "address": 101, "encoding": "bool"}})
    assert regmap.defective is not None and regmap.defective.table == "coil"


@pytest.mark.parametrize(
    ("entries", "expected"),
    [
        ({"defective": {"table": "coil", "address": 5, "encoding": "uint16"}}, "encoding must be bool, not 'uint16'"),
        ({"sequence": {"address": 100, "encoding": "float32"}}, "sequence must be a holding register encoded uint16"),
        ({"score": {"address": 65535, "encoding": "float32"}}, "float32 at address 65535 runs past"),
        ({"result_read": {"address": 110, "encoding": "uint32"}}, "needs its encoding 'uint16', not 'uint32'"),
        ({"code": {"address": 110, "encoding": "int64"}}, "int64"),
        ({"outcome": {"address": 103, "wordorder": "big"}}, "wordorder"),
        ({"code": {"address": 110, "encoding": "int16"}, "codes": {"crack": 40000}},
         "codes.crack: 40000 is out of the int16 range -32768..32767, the encoding of map entry code"),
        ({"outcomes": {"incomplete": -1}}, "outcomes.incomplete: -1 is out of the uint16 range"),
        ({"score": {"address": 110, "encoding": "uint16"}}, "score is a fraction between 0 and 1: encode it as float32"),
    ],
)
def test_a_bad_register_map_is_refused_with_a_clear_error(entries: dict, expected: str) -> None:
    with pytest.raises(ValidationError) as caught:
        RegisterMap.model_validate(entries)
    assert expected in str(caught.value)


def test_a_map_problem_is_a_register_map_error_inside_the_validation_error() -> None:
    with pytest.raises(ValidationError) as caught:
        RegisterMap.model_validate({"score": {"address": 102, "encoding": "float32"}})
    assert isinstance(caught.value.errors()[0]["ctx"]["error"], RegisterMapError)


def test_the_sequence_counter_wraps_to_one_and_never_shows_zero() -> None:
    regmap = RegisterMap()
    assert regmap.next_sequence(0) == 1
    assert regmap.next_sequence(41) == 42
    assert regmap.next_sequence(65535) == 1
    wide = RegisterMap.model_validate({"sequence": {"address": 90, "encoding": "uint32"}})
    assert wide.next_sequence(65535) == 65536


# --- encodings -------------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ["int16", "uint16", "int32", "uint32", "float32", "bool"])
@pytest.mark.parametrize("byte_order", ["big", "little"])
@pytest.mark.parametrize("word_order", ["big", "little"])
def test_every_encoding_round_trips(encoding: str, byte_order: str, word_order: str) -> None:
    value = {"int16": -1234, "uint16": 54321, "int32": -70000, "uint32": 4_000_000_000,
             "float32": -2.5, "bool": True}[encoding]
    words = encode(value, encoding, byte_order=byte_order, word_order=word_order)  # type: ignore[arg-type]
    assert all(0 <= w <= 0xFFFF for w in words)
    assert decode(words, encoding, byte_order=byte_order, word_order=word_order) == value  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "encoding", "expected"),
    [
        (70000, "uint16", "part_id: 70000 is out of the uint16 range 0..65535"),
        (-1, "uint32", "part_id: -1 is out of the uint32 range"),
        (1.5, "int32", "part_id: 1.5 is not an integer"),
        ("7", "float32", "part_id: '7' is not a number"),
    ],
)
def test_a_value_that_does_not_fit_its_encoding_is_refused(value: object, encoding: str, expected: str) -> None:
    with pytest.raises(EncodingError, match=expected.replace(".", r"\.").replace("'", "'")):
        encode(value, encoding, what="part_id")  # type: ignore[arg-type]


# --- the write layout ------------------------------------------------------------------


def test_the_default_map_writes_data_and_counter_in_one_request() -> None:
    requests = Layout(RegisterMap()).requests({"part_id": 0x12345, "outcome": 1}, sequence=7)
    assert requests == [Request("holding", 100, (7, 0x0001, 0x2345, 1), ("sequence", "part_id", "outcome"))]


def test_a_counter_apart_from_its_data_is_written_after_it() -> None:
    regmap = RegisterMap.model_validate({
        "sequence": {"address": 200},
        "defective": {"table": "coil", "address": 3, "encoding": "bool"},
        "score": {"address": 104, "encoding": "float32"},
    })
    requests = Layout(regmap).requests({"part_id": 9, "outcome": 2, "defective": True, "score": 0.0}, sequence=1)
    # The part id goes with the counter, after the data: a restarted agent takes the part id the PLC shows for written.
    assert [(r.table, r.address, r.fields) for r in requests] == [
        ("coil", 3, ("defective",)),
        ("holding", 103, ("outcome", "score")),
        ("holding", 101, ("part_id",)),
        ("holding", 200, ("sequence",)),
    ]
    assert not Layout(regmap).pair_is_atomic()  # apart: a part id shown may be of a half-written result


def test_a_part_id_beside_the_counter_is_written_with_it_after_the_data() -> None:
    regmap = RegisterMap.model_validate({"outcome": {"address": 200}})  # the counter and part id stay at 100-102
    requests = Layout(regmap).requests({"part_id": 9, "outcome": 2}, sequence=1)
    assert [(r.table, r.address, r.fields) for r in requests] == [
        ("holding", 200, ("outcome",)),
        ("holding", 100, ("sequence", "part_id")),
    ]
    assert Layout(regmap).pair_is_atomic()


@pytest.mark.parametrize(
    ("entry", "value"),
    [
        ({"encoding": "uint16"}, 65535), ({"encoding": "uint16"}, 65536), ({"encoding": "int16"}, -32769),
        ({"encoding": "uint32"}, 7.0), ({"encoding": "uint32"}, 7.5), ({"encoding": "uint32"}, True),
        ({"encoding": "float32"}, True), ({"encoding": "float32"}, "0.5"), ({"encoding": "float32"}, 1e39),
        ({"encoding": "uint16", "scale": 1000}, 0.0655), ({"encoding": "uint16", "scale": 1000}, 65.6),
        ({"encoding": "int16", "scale": 1000}, -32.7685), ({"encoding": "float32", "scale": 1e30}, 1e9),
    ],
)
def test_checking_a_value_refuses_exactly_what_encoding_it_would(entry: dict, value: object) -> None:
    """The agent checks verdicts as they arrive and encodes them when their part is written."""
    spec = Entry.model_validate({"address": 300, **entry})
    try:
        Layout.encode("score", spec, value)  # type: ignore[arg-type]
    except EncodingError as exc:
        with pytest.raises(EncodingError) as refused:
            Layout.check("score", spec, value)  # type: ignore[arg-type]
        assert str(refused.value) == str(exc)
    else:
        Layout.check("score", spec, value)  # type: ignore[arg-type]


def test_only_the_maps_writable_addresses_are_allowed() -> None:
    regmap = RegisterMap.model_validate({"result_read": {"address": 110}})
    allowed = Layout(regmap).allowed()
    assert allowed["holding"] == frozenset({100, 101, 102, 103})
    assert allowed["coil"] == frozenset()


# --- the join --------------------------------------------------------------------------


def verdict(part_id: int, defective: bool = False, score: float = 0.1, label: str = "ok") -> dict:
    return {"part_id": part_id, "defective": defective, "score": score, "label": label}


def test_a_part_closes_when_every_view_has_sent_its_verdict() -> None:
    join: Join[str] = Join(["front", "back"], timeout=2.0)
    assert join.offer("front", verdict(1), "f1", now=0.0) is Offer.HELD
    assert not join.queue
    join.offer("back", verdict(1), "b1", now=0.1)
    (part,) = join.queue
    assert (part.part_id, part.outcome, part.items) == (1, Outcome.OK, ["f1", "b1"])


def test_a_part_is_defective_if_any_view_is() -> None:
    join: Join[str] = Join(["front", "back"], timeout=2.0)
    join.offer("front", verdict(1), "f", now=0.0)
    join.offer("back", verdict(1, True, 0.9, "crack"), "b", now=0.0)
    (part,) = join.queue
    assert (part.outcome, part.label, part.score) == (Outcome.DEFECTIVE, "crack", 0.9)


def test_a_part_missing_a_view_after_the_timeout_closes_as_incomplete() -> None:
    join: Join[str] = Join(["front", "back"], timeout=2.0)
    join.offer("front", verdict(1, True, 0.8, "chip"), "f", now=10.0)
    assert join.expire(now=11.9) == []
    (part,) = join.expire(now=12.0)
    assert (part.outcome, part.missing) == (Outcome.INCOMPLETE, ("back",))
    assert list(join.queue) == [part]


def test_a_redelivered_verdict_is_kept_with_its_part_and_a_written_part_is_not_written_again() -> None:
    join: Join[str] = Join(["front", "back"], timeout=2.0)
    join.offer("front", verdict(1, score=0.1), "f", now=0.0)
    join.offer("front", verdict(1, score=0.7), "f again", now=0.1)
    join.offer("back", verdict(1), "b", now=0.2)
    (part,) = join.queue
    assert part.items == ["f", "f again", "b"] and part.score == 0.1  # the first copy counts
    join.written(part)
    assert join.offer("back", verdict(1), "b again", now=0.3) is Offer.WRITTEN
    assert not join.queue and not join.open


def test_parts_queue_in_the_order_they_close() -> None:
    join: Join[int] = Join(["front", "back"], timeout=1.0)
    join.offer("front", verdict(1), 1, now=0.0)
    join.offer("front", verdict(2), 2, now=0.5)
    join.offer("back", verdict(2), 2, now=0.6)
    join.expire(now=1.0)
    assert [p.part_id for p in join.queue] == [2, 1]
    with pytest.raises(ValueError, match="part 1 is not the next one to write"):
        join.written(join.queue[1])
