"""A PLC simulator: a pymodbus TCP server laid out by a register map.

Only the map's addresses exist (holding registers; coils as the map names them), so
a write anywhere else gets the "illegal data address" exception a real PLC would
send. Each new sequence counter is decoded into a result; with a ``result_read``
entry the simulator echoes the counter there, as a PLC program taking the result
would (``take_results=False`` leaves that to the caller).

It runs its server in its own thread with its own event loop, so tests and the
``graphrun plc-sim`` command drive it alike. Register values survive ``stop`` and
``start``: a stop models the link going down, not the PLC losing its memory.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from ..errors import PlcUnreachable
from .encoding import decode, encode
from .regmap import Entry, RegisterMap, Table

#: Function codes that write coils / holding registers.
_COIL_WRITES = frozenset({5, 15})
_REGISTER_WRITES = frozenset({6, 16, 23})


@dataclass(frozen=True)
class PlcResult:
    """One result as the PLC saw it when its sequence counter changed."""

    sequence: int
    values: dict[str, bool | int | float]
    received: float = field(default_factory=time.time)  # seconds since the epoch

    def outcome_name(self, regmap: RegisterMap) -> str:
        """The outcome by the map's name ("ok", "defective", "incomplete"), "reject" or
        "pass" for a boolean one, "outcome N" for a number the map does not name."""
        outcome = self.values.get("outcome")
        if isinstance(outcome, bool):
            return "reject" if outcome else "pass"
        if outcome is not None:
            names = {v: k for k, v in regmap.outcomes.model_dump().items()}
            return names.get(int(outcome), f"outcome {outcome}")
        if "defective" in self.values:
            return "reject" if self.values["defective"] else "pass"
        return "unknown"

    def describe(self, regmap: RegisterMap) -> str:
        parts = [f"result {self.sequence}"]
        if "part_id" in self.values:
            parts.append(f"part {self.values['part_id']}")
        if self.values.get("outcome") is not None:
            parts.append(self.outcome_name(regmap))
        if "defective" in self.values:
            parts.append("reject" if self.values["defective"] else "pass")
        if "score" in self.values:
            parts.append(f"score {float(self.values['score']):.3f}")
        if "code" in self.values:
            parts.append(f"code {self.values['code']}")
        return ": ".join(parts[:1]) + (": " + ", ".join(parts[1:]) if parts[1:] else "")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class PlcSimulator:
    """A Modbus TCP server holding exactly the registers of one map."""

    def __init__(
        self,
        regmap: RegisterMap,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        unit: int = 1,
        take_results: bool = True,
        on_result: Callable[[PlcResult], None] | None = None,
    ):
        self.map = regmap
        self.host = host
        self.port = port or free_port(host)
        self.unit = unit
        self.take_results = take_results
        self.on_result = on_result
        self.results: list[PlcResult] = []
        self._memory: dict[Table, dict[int, int]] = {"holding": {}, "coil": {}}
        for _, entry in regmap.entries():
            self._memory[entry.table].update({a: 0 for a in range(entry.address, entry.last + 1)})
        self._last_sequence = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: ModbusTcpServer | None = None
        self._thread: threading.Thread | None = None
        self._stop: asyncio.Event | None = None

    # --- running ------------------------------------------------------------------------

    def start(self) -> PlcSimulator:
        ready = threading.Event()
        failure: list[BaseException] = []
        self._thread = threading.Thread(target=self._run, args=(ready, failure), name="plc-sim", daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            self._thread.join()
            raise PlcUnreachable(f"the PLC simulator could not listen on {self.host}:{self.port}: {failure[0]}")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join()
        self._loop = self._server = self._thread = self._stop = None

    def wait(self) -> None:
        """Block until the server thread ends (the command line, until Ctrl-C)."""
        while self._thread is not None and self._thread.is_alive():
            self._thread.join(0.5)

    def __enter__(self) -> PlcSimulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self, ready: threading.Event, failure: list[BaseException]) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            try:
                self._server = ModbusTcpServer(self._device(), address=(self.host, self.port))
                await self._server.serve_forever(background=True)
            except BaseException as exc:  # noqa: BLE001 - reported to start()
                failure.append(exc)
                ready.set()
                return
            ready.set()
            await self._stop.wait()
            await self._server.shutdown()

        asyncio.run(main())

    def _device(self) -> SimDevice:
        """The server's memory: one block per map entry, with the values held so far."""
        holding: list[SimData] = []
        coils: list[SimData] = []
        for _, entry in self.map.entries():
            addresses = range(entry.address, entry.last + 1)
            words = [self._memory[entry.table][a] for a in addresses]
            if entry.table == "coil":
                coils.append(SimData(entry.address, values=[bool(w) for w in words], datatype=DataType.BITS))
            else:
                holding.append(SimData(entry.address, values=words, datatype=DataType.REGISTERS))
        # pymodbus wants every table non-empty: coils and discrete inputs get one bit
        # word at 0 if the map names none; input registers, one invalid address.
        no_bits = [SimData(0, values=False, datatype=DataType.BITS)]
        return SimDevice(
            self.unit,
            simdata=(coils or no_bits, list(no_bits), holding, [SimData(0, datatype=DataType.INVALID)]),
            action=self._action,
        )

    # --- the PLC side of the protocol ---------------------------------------------------

    async def _action(
        self,
        function_code: int,
        start: int,
        address: int,
        count: int,
        registers: list[int],
        values: list[int] | list[bool] | None,
    ) -> None:
        """Called by the server before each access; it records writes and spots new results."""
        if not values:
            return None
        if function_code in _COIL_WRITES:
            self._memory["coil"].update({address + i: int(v) for i, v in enumerate(values)})
            return None
        if function_code not in _REGISTER_WRITES:
            return None
        self._memory["holding"].update({address + i: int(v) for i, v in enumerate(values)})
        seq = self.map.sequence
        if address <= seq.last and seq.address <= address + len(values) - 1:
            sequence = int(self._value(seq))
            if sequence != self._last_sequence:
                self._last_sequence = sequence
                self._new_result(sequence, registers, start)
        return None

    def _new_result(self, sequence: int, registers: list[int], start: int) -> None:
        result = PlcResult(sequence, {n: self._value(e) for n, e in self.map.writable() if n != "sequence"})
        self.results.append(result)
        handshake = self.map.result_read
        if self.take_results and handshake is not None:
            words = encode(sequence, handshake.encoding, byte_order=handshake.byte_order,
                           word_order=handshake.word_order)
            for i, word in enumerate(words):
                registers[handshake.address + i - start] = word
                self._memory["holding"][handshake.address + i] = word
        if self.on_result is not None:
            self.on_result(result)

    def _value(self, entry: Entry) -> bool | int | float:
        memory = self._memory[entry.table]
        words = [memory[a] for a in range(entry.address, entry.last + 1)]
        if entry.table == "coil":
            return bool(words[0])
        value = decode(words, entry.encoding, byte_order=entry.byte_order, word_order=entry.word_order)
        return value / entry.scale if entry.scale != 1.0 else value

    # --- inspection and the PLC program's own writes ------------------------------------

    def read(self, table: Table, address: int, count: int = 1) -> list[int]:
        """Raw registers (or 0/1 coils) as the server holds them."""
        function_code = 1 if table == "coil" else 3
        return [int(v) for v in self._call(self._server_call("async_getValues", function_code, address, count))]

    def take(self, sequence: int) -> None:
        """Echo ``sequence`` in result_read: the PLC program has taken that result."""
        handshake = self.map.result_read
        if handshake is None:
            raise ValueError("the register map has no result_read entry")
        words = encode(sequence, handshake.encoding, byte_order=handshake.byte_order,
                       word_order=handshake.word_order)
        self._call(self._server_call("async_setValues", 16, handshake.address, words))

    def _server_call(self, method: str, *args: object):  # type: ignore[no-untyped-def]
        if self._server is None:
            raise PlcUnreachable("the PLC simulator is not running")
        return getattr(self._server, method)(self.unit, *args)

    def _call(self, coroutine):  # type: ignore[no-untyped-def]
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=5)
