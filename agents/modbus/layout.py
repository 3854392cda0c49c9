"""The Modbus requests that write one result, in the order that keeps the PLC consistent.

The PLC must never see a new sequence counter beside old data. When the counter and
the data registers form one contiguous block they go in a single write-multiple
request (atomic on the PLC); otherwise the data is written first and the part id and
the counter last (one request when they are adjacent, as in the default map).

The part id goes with the counter, not with the data, because an agent that restarts
takes the part id the PLC shows for written: an agent killed between the data write and
the counter write must leave the previous part's id there, or its successor would
acknowledge the half-written part without writing it (the part would be lost). Only
when the part id and the counter share one request is the pair the PLC shows sure to
belong to one result; ``pair_is_atomic`` says whether it is.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from .encoding import encode, number
from .regmap import Entry, RegisterMap, Table

#: Written last, after the data, in this order.
LAST = ("part_id", "sequence")


@dataclass(frozen=True, slots=True)
class Request:
    """One write request: consecutive addresses of one table."""

    table: Table
    address: int
    values: tuple[int, ...]  # registers, or 0/1 per coil
    fields: tuple[str, ...]  # the map entries it carries, for messages

    @property
    def last(self) -> int:
        return self.address + len(self.values) - 1


def _runs(parts: list[tuple[str, Entry, list[int]]]) -> list[Request]:
    """Merge entries of one table into requests over consecutive addresses."""
    requests: list[Request] = []
    for name, entry, words in sorted(parts, key=lambda p: p[1].address):
        if requests and requests[-1].last + 1 == entry.address:
            prev = requests[-1]
            requests[-1] = Request(entry.table, prev.address, prev.values + tuple(words), prev.fields + (name,))
        else:
            requests.append(Request(entry.table, entry.address, tuple(words), (name,)))
    return requests


def _scaled(entry: Entry, value: bool | int | float) -> bool | int | float:
    """The value times the entry's scale (rounded for integer encodings); a bool stays a bool."""
    if entry.scale == 1.0 or isinstance(value, bool):
        return value
    value = value * entry.scale
    return value if entry.encoding == "float32" else round(value)


class Layout:
    """Turns a result's field values into write requests, following one register map."""

    def __init__(self, regmap: RegisterMap):
        self.map = regmap

    def requests(self, values: Mapping[str, bool | int | float], sequence: int) -> list[Request]:
        """The requests writing ``values`` (one per data entry) then ``sequence``, in order."""
        coils: list[tuple[str, Entry, list[int]]] = []
        holding: list[tuple[str, Entry, list[int]]] = []
        for name, entry in self.map.writable():
            words = self.encode(name, entry, sequence if name == "sequence" else values[name])
            (coils if entry.table == "coil" else holding).append((name, entry, words))
        merged = _runs(holding)
        if len(merged) > 1:  # not one block: data first, then the part id with the counter, the counter last
            merged = _runs([p for p in holding if p[0] not in LAST])
            pair = _runs([p for p in holding if p[0] in LAST])
            if len(pair) > 1:  # apart: the part id, then the counter on its own
                pair = _runs([p for p in holding if p[0] == "part_id"]) + _runs([p for p in holding if p[0] == "sequence"])
            merged += pair
        return _runs(coils) + merged

    def pair_is_atomic(self) -> bool:
        """Whether the part id and the counter are written in one request, so the part id the
        PLC shows is that of the result its counter shows (see the module's docstring)."""
        part_id = self.map.part_id
        if part_id is None or part_id.table != "holding":
            return False
        entries = sorted((part_id, self.map.sequence), key=lambda e: e.address)
        return entries[0].last + 1 == entries[1].address

    @staticmethod
    def encode(name: str, entry: Entry, value: bool | int | float) -> list[int]:
        """The registers of one entry's value, scaled as the map says; EncodingError if it can't fit."""
        return encode(_scaled(entry, value), entry.encoding, byte_order=entry.byte_order, word_order=entry.word_order,
                      what=f"map entry {name}")

    @staticmethod
    def check(name: str, entry: Entry, value: bool | int | float) -> None:
        """EncodingError if ``encode`` would refuse the value; cheaper, for a value encoded later."""
        number(_scaled(entry, value), entry.encoding, what=f"map entry {name}")

    def allowed(self) -> dict[Table, frozenset[int]]:
        """Every address the agent may write, by table: the map's writable entries only."""
        allowed: dict[Table, set[int]] = {"holding": set(), "coil": set()}
        for _, entry in self.map.writable():
            allowed[entry.table].update(range(entry.address, entry.last + 1))
        return {table: frozenset(addresses) for table, addresses in allowed.items()}
