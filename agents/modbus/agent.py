"""The Modbus agent: joins each part's verdicts and writes the result to the machine's PLC.

Delivery contract: a verdict is acknowledged only once the PLC write for its part
succeeded. Verdicts are held while their part waits for its other views or for the
PLC; while the PLC is unreachable the agent reconnects with backoff and keeps closed
parts queued in order, so nothing is lost, reordered or written twice. A crash
leaves the held verdicts pending in Redis, to be delivered again on restart.

A PLC that is down when the agent starts is the same case, not a failed start: the
agent starts, says ``plc: waiting for PLC`` in its health record (state "degraded",
with the reason, as while the link is down later), holds the verdicts
and polls (every ``reconnect_max`` seconds at most) until the PLC answers. Failing the
start instead would hand the wait to the launcher's restart backoff (up to 16 s), and
a graph whose PLC simulator is one of its agents would crash at every start.
"""

from __future__ import annotations

import logging
import time

from pydantic import BaseModel, ConfigDict, Field

from graphrun import Agent, Backoff, DeadLetter, Inputs, Message, Output, Retry

from ..errors import AgentConfigError, EncodingError, PlcExceptionReply, PlcUnreachable
from ..messages import PlcResult, Verdict
from ..part_join import Join, Offer, Outcome, Part
from .layout import Layout
from .plc import PlcLink
from .regmap import RegisterMap


class ModbusParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    host: str = Field(description="the PLC's host name or address; ${ENV} references are expanded by the graph")
    port: int = Field(502, ge=1, le=65535)
    unit: int = Field(1, ge=0, le=255, description="Modbus unit (device) id")
    map: RegisterMap = Field(default_factory=RegisterMap, description="where and how results are written")
    timeout: float = Field(1.0, gt=0, description="seconds to wait for the PLC's reply to one request")
    retries: int = Field(1, ge=0, description="times a request without reply is sent again before the link counts as down")
    join_timeout: float = Field(
        2.0, gt=0, description="seconds a part waits for its missing views before it is written as incomplete"
    )
    reconnect_min: float = Field(0.1, gt=0, description="first delay before reconnecting to an unreachable PLC")
    reconnect_max: float = Field(
        0.5, gt=0, description="longest delay between reconnection attempts: results resume this soon after the PLC returns"
    )
    max_queue: int = Field(
        10_000, ge=1, description="closed parts kept while the PLC is down; beyond it, new verdicts wait in Redis"
    )


class ModbusAgent(Agent):
    """Writes one result per part (outcome, part id, score, code, sequence counter) to a PLC."""

    verdicts = Inputs(Verdict, doc="one input per camera view; the join waits for all that are connected")
    results = Output(PlcResult, maxlen=100_000, doc="what was written to the PLC for each part, once the PLC holds it: "
                     "the audit trail's last step (graphrun trace)")

    Params = ModbusParams
    params: ModbusParams
    tick_interval = 0.05

    #: Longest time one flush blocks polling the handshake register before it yields.
    HANDSHAKE_POLL = 0.1

    def start(self) -> None:
        views = self.verdicts
        if not views:
            raise AgentConfigError(f"modbus agent {self.name!r} has no verdict inputs: connect at least one")
        p = self.params
        self._map = p.map
        self._layout = Layout(p.map)
        self._join: Join[Message] = Join(views, p.join_timeout)
        self._link = PlcLink(p.host, p.port, p.unit, allowed=self._layout.allowed(), timeout=p.timeout, retries=p.retries)
        self._sequence = 0  # the counter value of the last result the PLC holds
        self._synced = False  # the PLC's counter and last part were read once
        self._awaiting: int | None = None  # a sequence the PLC has not echoed in result_read yet
        self._waiting_since: float | None = None
        # reconnect_max is the longest delay, the first included.
        self._reconnect = Backoff(initial=min(p.reconnect_min, p.reconnect_max), maximum=p.reconnect_max)
        self._down_since: float | None = None
        self.status.update(written=0, ok=0, defective=0, incomplete=0, queued=0, open=0)
        self._count()
        try:
            self._link.connect()
        except PlcUnreachable as exc:
            self._link_lost(exc)
            return
        try:
            self._first_sync()  # a map address the PLC lacks is a wrong setting: fail the start, naming it
        except PlcUnreachable as exc:
            self._link_lost(exc)
            return
        except Exception:
            self._link.close()
            raise
        self.status["plc"] = "connected"

    def stop(self) -> None:
        if hasattr(self, "_link"):
            self._link.close()

    # --- messages and time ----------------------------------------------------------

    def handle(self, msg: Message) -> None:
        if len(self._join.queue) >= self.params.max_queue:
            raise Retry(f"{len(self._join.queue)} results are waiting for the PLC", delay=self._reconnect.peek())
        self._check(msg)
        if self._join.offer(msg.port or "", msg.payload, msg, time.monotonic()) is Offer.HELD:
            self.hold(msg)
        else:
            self.log.info("part %s from %s was already written to the PLC: acknowledged, not written again",
                          msg["part_id"], msg.port)
        self._flush()

    def tick(self) -> None:
        if not self._link.connected:
            self._link_up()  # also with nothing to write: the health record tells when the PLC is back
        for part in self._join.expire(time.monotonic()):
            self.log.warning("part %s is incomplete: no verdict from %s within %.1f s",
                             part.part_id, ", ".join(part.missing), self.params.join_timeout)
        self._flush()
        self.status.update(queued=len(self._join.queue), open=len(self._join.open))

    def _check(self, msg: Message) -> None:
        """A verdict the map can't write is refused at once, not after it blocks the queue."""
        if "part_id" not in msg.payload:
            raise DeadLetter(f"verdict on {msg.port!r} has no part_id")
        for name in ("part_id", "score"):
            entry = getattr(self._map, name)
            if entry is None or name not in msg.payload:
                continue
            try:
                self._layout.check(name, entry, msg[name])  # encoded once, when its part is written
            except EncodingError as exc:
                raise DeadLetter(f"{exc} ({entry.encoding})") from None

    # --- writing ------------------------------------------------------------------------

    def _flush(self) -> None:
        """Write queued results, oldest first, while the PLC takes them."""
        queue = self._join.queue
        while queue and not self.stopping:
            if not self._link_up():
                return
            part = queue[0]
            try:
                if not self._plc_ready():
                    return
                if part.sequence is None:
                    part.sequence = self._map.next_sequence(self._sequence)
                for request in self._layout.requests(self._values(part), part.sequence):
                    self._link.write(request)
            except (PlcUnreachable, PlcExceptionReply) as exc:
                self._link_lost(exc)
                return
            self._written(part)

    def _values(self, part: Part[Message]) -> dict[str, bool | int | float]:
        outcome = part.outcome or Outcome.INCOMPLETE
        rejected = outcome is not Outcome.OK
        boolean = self._map.outcome is not None and self._map.outcome.encoding == "bool"
        return {
            "part_id": part.part_id,
            "outcome": rejected if boolean else getattr(self._map.outcomes, outcome.value),
            "defective": rejected,
            "score": part.score,
            "code": self._map.codes.get(part.label, 0),
        }

    def _written(self, part: Part[Message]) -> None:
        """The PLC holds ``part``: acknowledge its verdicts."""
        assert part.sequence is not None
        self._sequence = part.sequence
        if self._map.result_read is not None:
            self._awaiting = part.sequence
        self._join.written(part)
        self.release(*part.items)
        self._report(part)
        outcome = (part.outcome or Outcome.INCOMPLETE).value
        self.status["written"] = self.status.get("written", 0) + 1
        self.status[outcome] = self.status.get(outcome, 0) + 1
        self.status["sequence"] = part.sequence
        self._count()

    def _count(self) -> None:
        """What the run's summary line counts (``graphrun run`` prints it when it stops)."""
        self.status["counts"] = {"parts": self.status["written"], "rejects": self.status["defective"],
                                 "incomplete": self.status["incomplete"]}

    def _report(self, part: Part[Message]) -> None:
        """Send what the PLC now holds for ``part``, traced from its first verdict.

        The requests are laid out again rather than kept from the write: a write that
        landed just before the link dropped is only learnt of after the reconnect.
        """
        assert part.sequence is not None
        requests = self._layout.requests(self._values(part), part.sequence)
        self.results.send({
            "part_id": part.part_id,
            "outcome": (part.outcome or Outcome.INCOMPLETE).value,
            "label": part.label,
            "score": part.score,
            "sequence": part.sequence,
            "registers": [{"table": r.table, "address": r.address, "values": list(r.values), "fields": list(r.fields)}
                          for r in requests],
            "missing": list(part.missing),
            "verdicts": [f"{m.stream} {m.entry_id}" for m in part.items],
            "time": time.time(),
        }, parent=part.items[0] if part.items else None)

    def _plc_ready(self) -> bool:
        """Whether the PLC took the last result (result_read echoes its sequence number)."""
        handshake = self._map.result_read
        if self._awaiting is None or handshake is None:
            return True
        now = time.monotonic()
        if self._waiting_since is None:
            self._waiting_since = now
        give_up = now + self.HANDSHAKE_POLL
        while True:
            if self._link.read_value("result_read", handshake) == self._awaiting:
                break
            waited = time.monotonic() - self._waiting_since
            if waited >= handshake.timeout:
                if handshake.on_timeout == "write":
                    self.log.warning("the PLC did not take result %d within %.1f s: writing the next one anyway",
                                     self._awaiting, handshake.timeout)
                    break
                if self.status.get("plc") != "result not taken":
                    self.log.error("the PLC has not taken result %d for %.1f s: holding %d result(s) back",
                                   self._awaiting, waited, len(self._join.queue))
                self.status["plc"] = "result not taken"
                return False
            if time.monotonic() >= give_up or self.wait(0.002):
                return False
        self._awaiting = None
        self._waiting_since = None
        self.status["plc"] = "connected"
        return True

    # --- the link -----------------------------------------------------------------------

    def _first_sync(self) -> None:
        """Read every map entry once: an address the PLC lacks fails here, with its name.

        The counter continues from the PLC's value, and the part it shows counts as
        written, so verdicts redelivered after a crash are not written a second time. That
        needs the part id and the counter in one request (``Layout.pair_is_atomic``);
        otherwise the part is written again: twice rather than never.
        """
        values = {name: self._link.read_value(name, entry) for name, entry in self._map.entries()}
        self._sequence = int(values["sequence"])
        # Only a part id written in one request with the counter surely belongs to a written result.
        if self._sequence and "part_id" in values and self._layout.pair_is_atomic():
            # Verdicts that arrived while the agent waited for the PLC may be of that part.
            shown = self._join.already_written(int(values["part_id"]))
            if shown:
                self.log.info("part %s is already on the PLC: acknowledged, not written again", values["part_id"])
                self.release(*shown)
        if self._sequence and "result_read" in values and int(values["result_read"]) != self._sequence:
            self._awaiting = self._sequence
        self._synced = True

    def _link_up(self) -> bool:
        if self._link.connected:
            return True
        if not self._reconnect.ready():
            return False
        first = not self._synced
        try:
            self._link.connect()
            if first:
                self._first_sync()
            else:
                self._resync()
        except (PlcUnreachable, PlcExceptionReply) as exc:
            self._link_lost(exc)
            return False
        if self._down_since is not None:
            self.log.log(logging.INFO if first else logging.WARNING, "PLC link %s after %.1f s; %d result(s) to write",
                         "up" if first else "restored", time.monotonic() - self._down_since, len(self._join.queue))
        self._down_since = None
        self._reconnect.reset()
        self.status["plc"] = "connected"
        self.status.pop("plc_error", None)
        self.status.pop("degraded", None)
        return True

    def _resync(self) -> None:
        """After a reconnect, learn whether the write in flight when the link dropped landed."""
        shown = int(self._link.read_value("sequence", self._map.sequence))
        head = self._join.queue[0] if self._join.queue else None
        if head is not None and head.sequence is not None and shown == head.sequence:
            self._written(head)  # the counter goes last, so its data landed too
        elif shown != self._sequence:
            self.log.warning("the PLC shows sequence %d, not %d: it was reset; continuing the count", shown,
                             self._sequence)
            self._awaiting = None

    def _link_lost(self, exc: Exception) -> None:
        self._link.close()
        now = time.monotonic()
        if self._down_since is None:
            self._down_since = now
            if self._synced:
                self.log.error("%s; retrying with backoff, %d result(s) queued", exc, len(self._join.queue))
            else:
                # Not there yet (a PLC, or a simulator, starting after the agent): a state to wait in.
                self.log.info("%s; waiting for the PLC (verdicts are held until it answers)", exc)
        self._reconnect.next()
        if isinstance(exc, PlcExceptionReply):
            self.status["plc"] = f"refused: {exc}"
        elif not self._synced:
            self.status.update(plc="waiting for PLC", plc_error=str(exc))
        else:
            self.status["plc"] = f"unreachable: {exc}"
        # The health record's state: degraded, saying why, until the PLC answers again.
        self.status["degraded"] = f"{self.status['plc']} at {self.params.host}:{self.params.port}"
