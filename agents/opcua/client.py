"""Client mode: each part's result written to a server's nodes, and subscribed nodes read.

Delivery contract, as the Modbus agent's: a verdict is acknowledged only once the
server accepted the write of its part's result. Verdicts are held while their part
waits for its other views or for the server; while the server is away the agent
reconnects with backoff and keeps closed parts queued in order. Each result is two
writes: the data nodes, then the ``part_id`` and ``sequence`` nodes, so the server never
shows a new counter beside old data; a write cut off by an outage is written again with the same
sequence number, or recognised as landed when the server already shows it.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from graphrun import Backoff, DeadLetter, Message, ParamError, Retry

from ..errors import EncodingError, OpcuaRefused, OpcuaUnreachable
from ..part_join import Join, Offer, Outcome, Part
from .inputs import ChangeFeed
from .link import Link
from .loop import LoopThread
from .params import NodeSpec, OpcuaParams
from .values import next_sequence, result_values, variant

if TYPE_CHECKING:
    from .agent import OpcuaAgent

#: Longest time one flush blocks polling the handshake node before it yields.
HANDSHAKE_POLL = 0.1


class ClientMode:
    def __init__(self, agent: OpcuaAgent, views: tuple[str, ...]):
        self.agent = agent
        self.p: OpcuaParams = agent.params
        p = self.p
        self.views = views
        # Subscriptions alone (no verdict input): the join is never offered a verdict.
        self.join: Join[Message] = Join(views or ("none",), p.join_timeout)
        self.loop = LoopThread(agent.name)
        self.link = Link(p, self.loop)
        self.mapped: dict[str, NodeSpec] = dict(p.nodes.entries())
        self.types: dict[str, str] = {n: s.type for n, s in self.mapped.items() if s.type}
        self.sequence = 0  # the counter value of the last result the server holds
        self.synced = False
        self.awaiting: int | None = None  # a sequence the PLC has not echoed in the handshake node yet
        self.waiting_since: float | None = None
        self.reconnect = Backoff(initial=min(p.reconnect_min, p.reconnect_max), maximum=p.reconnect_max)
        self.down_since: float | None = None
        self.feed = ChangeFeed(p.subscribe)
        agent.status.update(written=0, ok=0, defective=0, incomplete=0, queued=0, open=0, changes=0)

    # --- start and stop -----------------------------------------------------------------

    def start(self) -> None:
        try:
            self.link.connect()
            self._first_sync()  # a node the server lacks is a wrong setting: fail the start, naming it
        except (OpcuaUnreachable, OpcuaRefused) as exc:
            self._lost(exc)
            return
        except Exception:
            self.link.close()
            raise
        self.agent.status["server"] = "connected"

    def stop(self) -> None:
        self.link.close()
        self.loop.close()

    # --- messages and time ----------------------------------------------------------------

    def handle(self, msg: Message) -> None:
        if len(self.join.queue) >= self.p.max_queue:
            raise Retry(f"{len(self.join.queue)} results are waiting for the OPC UA server",
                        delay=self.reconnect.peek())
        self._check(msg)
        if self.join.offer(msg.port or "", msg.payload, msg, time.monotonic()) is Offer.HELD:
            self.agent.hold(msg)
        else:
            self.agent.log.info("part %s from %s was already written to the server: acknowledged, not written again",
                                msg["part_id"], msg.port)
        self._flush()

    def tick(self) -> None:
        if not self.link.connected:
            self._link_up()
        elif self.p.subscribe and self.link.idle_for() >= self.p.reconnect_max:
            try:
                self.link.probe()  # a subscription alone would not notice the server is gone
            except OpcuaUnreachable as exc:
                self._lost(exc)
        for part in self.join.expire(time.monotonic()):
            self.agent.log.warning("part %s is incomplete: no verdict from %s within %.1f s",
                                   part.part_id, ", ".join(part.missing), self.p.join_timeout)
        self._flush()
        self._emit_changes()
        self.agent.status.update(queued=len(self.join.queue), open=len(self.join.open))

    def _check(self, msg: Message) -> None:
        """A verdict whose result can't be written is refused at once, not after it blocks the queue."""
        if "part_id" not in msg.payload:
            raise DeadLetter(f"verdict on {msg.port!r} has no part_id")
        for name in ("part_id", "score"):
            kind = self.types.get(name)
            if kind is not None and name in msg.payload:
                try:
                    variant(name, msg[name], kind)
                except (EncodingError, TypeError, ValueError) as exc:
                    raise DeadLetter(str(exc)) from None

    # --- subscriptions ----------------------------------------------------------------------

    def _emit_changes(self) -> None:
        for message in self.feed.messages(self.link.changes):
            self.agent.values.send(message)
        self.agent.status["changes"] = self.feed.sent

    # --- writing ----------------------------------------------------------------------------

    def _flush(self) -> None:
        """Write queued results, oldest first, while the server takes them."""
        waiting = self.join.queue
        while waiting and not self.agent.stopping:
            if not self._link_up():
                return
            part = waiting[0]
            try:
                if not self._taken():
                    return
                if part.sequence is None:
                    part.sequence = next_sequence(self.sequence, self.types["sequence"])
                data, last = self._writes(part)
                if data:
                    self.link.write(data)
                self.link.write(last)
            except (OpcuaUnreachable, OpcuaRefused) as exc:
                self._lost(exc)
                return
            self._written(part)

    def _writes(self, part: Part[Message]) -> tuple[list[tuple[str, Any]], list[tuple[str, Any]]]:
        """The two write requests of a result: the data, then the part id and the sequence.

        The part id goes with the sequence, after the data, so that the pair the server
        shows always belongs to one result: an agent killed between the two requests leaves
        the previous pair, and its successor does not take the half-written part for written.
        """
        values = result_values(part, {n: t for n, t in self.types.items() if n != "sequence"}, self.p.outcomes,
                               self.p.codes, written_at=time.time())
        writes = {n: (self.mapped[n].node, variant(n, v, self.types[n])) for n, v in values.items()}
        assert part.sequence is not None
        last = [writes.pop("part_id")] if "part_id" in writes else []
        last.append((self.mapped["sequence"].node, variant("sequence", part.sequence, self.types["sequence"])))
        return list(writes.values()), last

    def _written(self, part: Part[Message]) -> None:
        """The server holds ``part``'s result: acknowledge its verdicts and report it."""
        assert part.sequence is not None
        self.sequence = part.sequence
        if self.p.handshake is not None:
            self.awaiting = part.sequence
        self.join.written(part)
        self.agent.release(*part.items)
        outcome = (part.outcome or Outcome.INCOMPLETE).value
        self.agent.results.send({
            "part_id": part.part_id, "outcome": outcome, "label": part.label, "score": part.score,
            "sequence": part.sequence, "nodes": {n: s.node for n, s in self.mapped.items()},
            "missing": list(part.missing), "verdicts": [f"{m.stream} {m.entry_id}" for m in part.items],
            "time": time.time(),
        }, parent=part.items[0] if part.items else None)
        status = self.agent.status
        status["written"] = status.get("written", 0) + 1
        status[outcome] = status.get(outcome, 0) + 1
        status["sequence"] = part.sequence

    def _taken(self) -> bool:
        """Whether the PLC took the last result (the handshake node echoes its sequence number)."""
        handshake = self.p.handshake
        if self.awaiting is None or handshake is None:
            return True
        now = time.monotonic()
        if self.waiting_since is None:
            self.waiting_since = now
        give_up = now + HANDSHAKE_POLL
        while True:
            (shown,) = self.link.read([handshake.node])
            if shown == self.awaiting:
                break
            waited = time.monotonic() - self.waiting_since
            if waited >= handshake.timeout:
                if handshake.on_timeout == "write":
                    self.agent.log.warning("the PLC did not take result %d within %.1f s: writing the next one anyway",
                                           self.awaiting, handshake.timeout)
                    break
                if self.agent.status.get("server") != "result not taken":
                    self.agent.log.error("the PLC has not taken result %d for %.1f s: holding %d result(s) back",
                                         self.awaiting, waited, len(self.join.queue))
                self.agent.status["server"] = "result not taken"
                return False
            if time.monotonic() >= give_up or self.agent.wait(0.005):
                return False
        self.awaiting = None
        self.waiting_since = None
        self.agent.status["server"] = "connected"
        return True

    # --- the link -----------------------------------------------------------------------------

    def _first_sync(self) -> None:
        """Check every mapped node once and learn where the count stands.

        A node the server lacks, or whose type differs from the graph's, is a wrong setting:
        ParamError naming the field, which the runner reports with the graph file's line.
        """
        specs: dict[tuple[str, ...], NodeSpec] = {("nodes", n): s for n, s in self.mapped.items()}
        if self.p.handshake is not None:
            specs[("handshake",)] = self.p.handshake
        specs.update({("subscribe", n): s for n, s in self.p.subscribe.items()})
        found = self.link.data_types({".".join(path): spec for path, spec in specs.items()})
        for path, spec in specs.items():
            kind = found[".".join(path)]
            if isinstance(kind, BaseException):
                raise ParamError((*path, "node"), f"node {spec.node} on {self.link.url}: {_status(kind)}")
            if spec.type is not None and spec.type != kind:
                raise ParamError((*path, "type"), f"node {spec.node} has data type {kind}, not {spec.type}")
            if path[0] == "nodes":
                self.types[path[1]] = kind
        if "sequence" in self.mapped:
            next_sequence(0, self.types["sequence"])  # an integer type, or an error naming it
            shown = self.link.read([self.mapped["sequence"].node] +
                                   ([self.mapped["part_id"].node] if "part_id" in self.mapped else []))
            self.sequence = int(shown[0] or 0)
            if self.sequence and len(shown) > 1 and shown[1] is not None:
                # Verdicts redelivered after a crash may be of the part the server shows.
                items = self.join.already_written(int(shown[1]))
                if items:
                    self.agent.log.info("part %s is already on the server: acknowledged, not written again", shown[1])
                    self.agent.release(*items)
            if self.p.handshake is not None and self.sequence:
                (taken,) = self.link.read([self.p.handshake.node])
                self.awaiting = None if taken == self.sequence else self.sequence
        if self.p.subscribe:
            self.link.subscribe(self.p.subscribe)
        self.synced = True

    def _link_up(self) -> bool:
        if self.link.connected:
            return True
        if not self.reconnect.ready():
            return False
        first = not self.synced
        try:
            self.link.connect()
            if first:
                self._first_sync()
            else:
                self._resync()
        except (OpcuaUnreachable, OpcuaRefused) as exc:
            self._lost(exc)
            return False
        if self.down_since is not None:
            self.agent.log.warning("OPC UA server %s after %.1f s; %d result(s) to write", "up" if first else "back",
                                   time.monotonic() - self.down_since, len(self.join.queue))
        self.down_since = None
        self.reconnect.reset()
        self.agent.status["server"] = "connected"
        self.agent.status.pop("server_error", None)
        return True

    def _resync(self) -> None:
        """After a reconnect: did the write in flight land? And subscribe again."""
        if "sequence" in self.mapped:
            (shown,) = self.link.read([self.mapped["sequence"].node])
            shown = int(shown or 0)
            head = self.join.queue[0] if self.join.queue else None
            if head is not None and head.sequence is not None and shown == head.sequence:
                self._written(head)  # the counter goes last, so its data landed too
            elif shown != self.sequence:
                self.agent.log.warning("the server shows sequence %d, not %d: it was reset; continuing the count",
                                       shown, self.sequence)
                self.awaiting = None
        if self.p.subscribe:
            self.link.subscribe(self.p.subscribe)  # the current values come again: see the README

    def _lost(self, exc: Exception) -> None:
        self.link.close()
        if self.down_since is None:
            self.down_since = time.monotonic()
            if self.synced:
                self.agent.log.error("%s; retrying with backoff, %d result(s) queued", exc, len(self.join.queue))
            else:
                self.agent.log.warning("%s; waiting for the server (verdicts are held until it answers)", exc)
        self.reconnect.next()
        if isinstance(exc, OpcuaRefused):
            self.agent.status.update(server=f"refused: {exc.status}", server_error=str(exc))
        elif not self.synced:
            self.agent.status.update(server="waiting for server", server_error=str(exc))
        else:
            self.agent.status.update(server="unreachable", server_error=str(exc))


def _status(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__
