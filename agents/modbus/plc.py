"""The link to one PLC over Modbus TCP: guarded writes, reads, and errors that say what failed.

Every write is checked against the addresses of the register map before a byte is
sent, so a bug elsewhere can never touch a register the map does not name.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from pymodbus.client import ModbusTcpClient
from pymodbus.exceptions import ModbusException

from ..errors import PlcAddressRefused, PlcExceptionReply, PlcUnreachable
from .layout import Request
from .encoding import decode
from .regmap import Entry, Table, span

#: Modbus exception codes, for messages a maintainer can act on.
EXCEPTION_NAMES = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "server device failure",
    5: "acknowledge",
    6: "server device busy",
    8: "memory parity error",
    10: "gateway path unavailable",
    11: "gateway target device failed to respond",
}

# pymodbus logs every failed connect at ERROR; the agent reports outages itself.
logging.getLogger("pymodbus").setLevel(logging.CRITICAL)


class PlcLink:
    """A Modbus TCP client bound to one PLC, one unit id and one set of writable addresses."""

    def __init__(
        self,
        host: str,
        port: int,
        unit: int,
        *,
        allowed: Mapping[Table, frozenset[int]],
        timeout: float = 1.0,
        retries: int = 1,
    ):
        self.where = f"PLC {host}:{port} unit {unit}"
        self.unit = unit
        self._allowed = allowed
        self._client = ModbusTcpClient(host, port=port, timeout=timeout, retries=retries)

    def connect(self) -> None:
        if not self._client.connect():
            raise PlcUnreachable(f"cannot connect to {self.where}")

    def close(self) -> None:
        self._client.close()

    @property
    def connected(self) -> bool:
        return bool(self._client.connected)

    def write(self, request: Request) -> None:
        """Send one write request; refused locally if any address is outside the map."""
        outside = [a for a in range(request.address, request.last + 1) if a not in self._allowed[request.table]]
        if outside:
            raise PlcAddressRefused(
                f"refused to write {request.table} {outside[0]} on {self.where}: "
                f"the register map does not name that address"
            )
        what = f"write of {'/'.join(request.fields)} ({span(request.table, request.address, request.last)})"
        if request.table == "coil":
            self._call(what, self._client.write_coils, request.address, [bool(v) for v in request.values])
        else:
            self._call(what, self._client.write_registers, request.address, list(request.values))

    def read(self, table: Table, address: int, count: int, *, what: str = "") -> list[int]:
        """Read ``count`` coils (as 0/1) or holding registers."""
        label = f"read of {what or 'registers'} ({span(table, address, address + count - 1)})"
        if table == "coil":
            reply = self._call(label, self._client.read_coils, address, count=count)
            return [int(b) for b in reply.bits[:count]]
        return list(self._call(label, self._client.read_holding_registers, address, count=count).registers)

    def read_value(self, name: str, entry: Entry) -> bool | int | float:
        """The value a map entry holds on the PLC now."""
        words = self.read(entry.table, entry.address, entry.count, what=name)
        if entry.table == "coil":
            return bool(words[0])
        return decode(words, entry.encoding, byte_order=entry.byte_order, word_order=entry.word_order)

    def _call(self, what: str, method, *args, **kwargs):  # type: ignore[no-untyped-def]
        try:
            reply = method(*args, device_id=self.unit, **kwargs)
        except ModbusException as exc:
            self._client.close()  # a half-read reply must not be taken for the next one's
            raise PlcUnreachable(f"{what} to {self.where} failed: {exc}") from exc
        except OSError as exc:
            self._client.close()
            raise PlcUnreachable(f"{what} to {self.where} failed: {exc}") from exc
        if reply.isError():
            code = int(getattr(reply, "exception_code", 0))
            name = EXCEPTION_NAMES.get(code, "unknown exception")
            raise PlcExceptionReply(f"{self.where} refused the {what}: {name} (exception code {code})", code)
        return reply

