"""The register map: which PLC addresses receive each part of a result, and how.

Declared in the graph under the agent's ``map`` parameter. Every entry is optional
except the sequence counter; an entry left out keeps its default, ``null`` removes it.
The default map (no ``map`` given):

    holding 100      sequence counter   uint16, wraps 65535 -> 1 (0 means "no result yet")
    holding 101-102  part id            uint32, high word first
    holding 103      outcome            uint16: 0 OK, 1 defective, 2 incomplete

Optional entries: ``defective`` (a coil or register set for any outcome but OK; an
``outcome`` encoded bool means the same), ``score`` (the highest defect score of the
part's views), ``code`` (the defect label as a number, through ``codes``; other
labels write 0) and ``result_read``: a register the PLC sets to the sequence number
it has taken; the agent waits for it before writing the next result.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..errors import EncodingError, RegisterMapError
from .encoding import Encoding, Order, encode, register_count

Table = Literal["holding", "coil"]

#: Map entries the agent writes, in the order data is laid out; the counter goes last.
DATA_FIELDS = ("part_id", "outcome", "defective", "score", "code")


def span(table: Table, first: int, last: int) -> str:
    """Addresses as messages show them: "holding 100" or "holding 101-102"."""
    return f"{table} {first}" if first == last else f"{table} {first}-{last}"


class Entry(BaseModel):
    """One value's place in the PLC: a table, a first address, an encoding."""

    model_config = ConfigDict(extra="forbid")

    table: Table = "holding"
    address: int = Field(ge=0, le=65535)
    encoding: Encoding = "uint16"
    byte_order: Order = "big"
    word_order: Order = "big"
    scale: float = Field(1.0, gt=0, description="multiply before writing (1000: a score in per-mille); "
                         "integer encodings round")

    @model_validator(mode="after")
    def _fits(self) -> Entry:
        if self.table == "coil" and self.encoding != "bool":
            raise RegisterMapError(f"a coil holds one bit: encoding must be bool, not {self.encoding!r}")
        if self.last > 65535:
            raise RegisterMapError(
                f"{self.encoding} at address {self.address} runs past the last Modbus address 65535"
            )
        return self

    @property
    def count(self) -> int:
        """Addresses taken: one per coil, one per 16-bit register."""
        return 1 if self.table == "coil" else register_count(self.encoding)

    @property
    def last(self) -> int:
        return self.address + self.count - 1

    def describe(self) -> str:
        return span(self.table, self.address, self.last)


class Handshake(Entry):
    """The PLC's "result read" register: it echoes the sequence number it has taken."""

    timeout: float = Field(5.0, gt=0, description="seconds to wait for the PLC to take a result")
    on_timeout: Literal["wait", "write"] = Field(
        "wait",
        description="wait: keep the next result queued (nothing is overwritten unread); "
        "write: write it anyway (the PLC sees a gap in the sequence)",
    )

    @model_validator(mode="after")
    def _register(self) -> Handshake:
        if self.table != "holding" or self.encoding not in ("uint16", "uint32"):
            raise RegisterMapError("result_read must be a holding register encoded uint16 or uint32, like the sequence")
        return self


class Outcomes(BaseModel):
    """The numbers written for each outcome (an "incomplete" part may be mapped to the reject code)."""

    model_config = ConfigDict(extra="forbid")

    ok: int = 0
    defective: int = 1
    incomplete: int = 2


class RegisterMap(BaseModel):
    """Where and how a result is written; validated whole so overlaps are caught at start."""

    model_config = ConfigDict(extra="forbid")

    sequence: Entry = Entry(address=100, encoding="uint16")
    part_id: Entry | None = Entry(address=101, encoding="uint32")
    outcome: Entry | None = Entry(address=103, encoding="uint16")
    defective: Entry | None = None
    score: Entry | None = None
    code: Entry | None = None
    result_read: Handshake | None = None
    outcomes: Outcomes = Outcomes()
    codes: dict[str, int] = Field(
        default_factory=dict, description="defect label -> number written in `code`; other labels write 0"
    )

    @model_validator(mode="after")
    def _consistent(self) -> RegisterMap:
        if self.sequence.table != "holding" or self.sequence.encoding not in ("uint16", "uint32"):
            raise RegisterMapError(
                f"sequence must be a holding register encoded uint16 or uint32, "
                f"not {self.sequence.table} {self.sequence.encoding}"
            )
        if self.score is not None and self.score.encoding != "float32" and self.score.scale == 1.0:
            raise RegisterMapError(
                f"score is a fraction between 0 and 1: encode it as float32, or give a scale "
                f"(1000 writes per-mille) with encoding {self.score.encoding!r}"
            )
        if self.result_read is not None and self.result_read.encoding != self.sequence.encoding:
            raise RegisterMapError(
                f"result_read echoes the sequence, so it needs its encoding {self.sequence.encoding!r}, "
                f"not {self.result_read.encoding!r}"
            )
        self._numbers_fit()
        entries = self.entries()
        for i, (name, entry) in enumerate(entries):
            for other_name, other in entries[i + 1 :]:
                if entry.table == other.table and entry.address <= other.last and other.address <= entry.last:
                    raise RegisterMapError(
                        f"map entries {name} ({entry.describe()}) and {other_name} ({other.describe()}) overlap"
                    )
        return self

    def _numbers_fit(self) -> None:
        """Outcome and defect-code numbers must fit the entries that carry them."""
        checks = [("outcome", f"outcomes.{k}", v) for k, v in self.outcomes.model_dump().items()]
        checks += [("code", f"codes.{label}", v) for label, v in self.codes.items()]
        for name, what, number in checks:
            entry = getattr(self, name)
            if entry is None or entry.encoding == "bool":  # a bool outcome is "rejected"
                continue
            try:
                encode(number, entry.encoding, what=what)
            except EncodingError as exc:
                raise RegisterMapError(f"{exc}, the encoding of map entry {name}") from None

    def entries(self) -> list[tuple[str, Entry]]:
        """Every entry present, by name: data fields, the counter, the handshake."""
        names = (*DATA_FIELDS, "sequence", "result_read")
        return [(n, e) for n in names if (e := getattr(self, n)) is not None]

    def writable(self) -> list[tuple[str, Entry]]:
        """The entries the agent writes: all but the PLC's own handshake register."""
        return [(n, e) for n, e in self.entries() if n != "result_read"]

    @property
    def sequence_modulus(self) -> int:
        return 2 ** (16 * self.sequence.count)

    def next_sequence(self, current: int) -> int:
        """The counter after ``current``: it wraps to 1, since 0 means "no result yet"."""
        following = (current + 1) % self.sequence_modulus
        return following or 1
